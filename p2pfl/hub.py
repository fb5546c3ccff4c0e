"""A packed worker's agents as greenlets of one thread: where an agent would wait, the next one runs.

Threads with turns (turn.Turn) still pay the kernel for every hand-over: the next agent's thread is woken
and fights the current one for the GIL, and each message that reaches a waiting agent wakes its thread
on its own. Greenlets switch in user space, within one thread, and a waiting agent is resumed only once
one of its sockets is readable, a mate of the same hub handed it a message (ring), or its deadline passed:
the hub polls the sockets of every waiting agent at once, without blocking between two agents' turns and
blocking only when no agent can run. The agents' code is the same; they give way at the same points as with
turns (turn.py), in the same order.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterable, Iterator, Sequence

import greenlet
import torch
import zmq

from p2pfl import turn

log = logging.getLogger("p2pfl.hub")


class Hub:
    """Runs bodies as greenlets until all have ended; `wait_readable`, `sleep` and `pass_on` are where they
    give way. Only this thread's agents may call them, and a body must not block the thread elsewhere."""

    def __init__(self) -> None:
        self._ready: deque[greenlet.greenlet] = deque()
        self._parked: dict[greenlet.greenlet, tuple[Sequence[zmq.Socket], float]] = {}
        self._home: greenlet.greenlet | None = None  # run()'s loop: every agent switches back to it
        self._waiting_on: dict[object, greenlet.greenlet] = {}  # a token given to wait_readable: who waits under it
        self._tokens: set[object] = set()  # every token an agent of this hub waited under: it lives here

    def run(self, bodies: Iterable[Callable[[], object]]) -> None:
        self._home = greenlet.getcurrent()
        self._ready.extend(greenlet.greenlet(body) for body in bodies)
        grad = torch.is_grad_enabled()  # what a new agent starts with; a resumed one restores its own
        until_poll = 0  # switches left before the parked agents' sockets are looked at again
        with turn.installed(self):
            while self._ready or self._parked:
                if not self._ready:
                    self._wake(block=True)
                    continue
                task = self._ready.popleft()
                torch.set_grad_enabled(grad)
                try:
                    task.switch()
                except Exception:  # an agent's own errors end in its exit code; this is only a safety net
                    log.exception("an agent greenlet ended with an error")
                until_poll -= 1
                if self._parked and until_poll <= 0:
                    # Once per pass over the ready agents, not after every switch: a poll covers every parked
                    # agent's sockets (hundreds at 128 agents per worker), and a woken agent queues behind the
                    # pass anyway.
                    self._wake(block=False)
                    until_poll = len(self._ready)
        torch.set_grad_enabled(grad)

    def wait_readable(self, sockets: Sequence[zmq.Socket | int], seconds: float, token: object = None) -> None:
        """Return once one of `sockets` has a message to read, or after `seconds`, or once a mate rings `token`
        (ring()); the others run meanwhile."""
        if token is None:
            self._park(sockets, seconds)
            return
        self._tokens.add(token)
        self._waiting_on[token] = greenlet.getcurrent()
        try:
            self._park(sockets, seconds)
        finally:
            del self._waiting_on[token]

    def ring(self, token: object) -> bool:
        """A mate left a message for the agent that waits under `token`: it runs again if it waits, at no system
        call, where a doorbell over inproc:// costs a send, a poll and a receive. False when no agent of this hub
        ever waited under `token` (a thread, or one not yet waiting): then the caller rings its socket instead."""
        if token not in self._tokens:
            return False
        task = self._waiting_on.get(token)
        if task is not None and self._parked.pop(task, None) is not None:
            self._ready.append(task)
        return True

    def sleep(self, seconds: float) -> None:
        self._park((), seconds)

    def pass_on(self) -> None:
        """The others go first (those waiting whose messages came, then back to this one): agents keep pace
        round by round even when they never wait (local-only training)."""
        if self._ready or self._parked:
            self._ready.append(greenlet.getcurrent())
            self._switch_home()

    def breathe(self) -> None:
        """Within a long stretch of work (waiting()): the others run a while, as they would beside a thread."""
        self.pass_on()

    @contextmanager
    def held(self) -> Iterator[None]:
        yield  # an agent holds the thread whenever it runs

    def waiting(self) -> ContextManager[None]:
        return turn.NOTHING  # what runs inside (a test-set pass) holds the thread, and breathe()s between its pieces

    def _park(self, sockets: Sequence[zmq.Socket], seconds: float) -> None:
        self._parked[greenlet.getcurrent()] = (sockets, time.monotonic() + max(0.0, seconds))
        self._switch_home()

    def _switch_home(self) -> None:
        grad = torch.is_grad_enabled()  # torch's grad mode is per thread, so every agent of the hub shares it
        self._home.switch()
        torch.set_grad_enabled(grad)

    def _wake(self, block: bool) -> None:
        """Move the parked agents whose sockets are readable or whose time is up to the ready queue, in the
        order they parked; with `block`, first wait until there is one."""
        timeout = 0.0
        if block:
            timeout = max(0.0, min(deadline for _, deadline in self._parked.values()) - time.monotonic())
        # The poll list is built afresh from the parked agents: linear in their sockets, where a zmq.Poller's
        # unregister shifts every later entry, so waking a pass of agents from it took quadratic time.
        items = [(socket, zmq.POLLIN) for sockets, _ in self._parked.values() for socket in sockets]
        if items:
            readable = dict(zmq.zmq_poll(items, math.ceil(timeout * 1000)))
        else:
            time.sleep(timeout)
            readable = {}
        now = time.monotonic()
        for task, (sockets, deadline) in list(self._parked.items()):
            if deadline <= now or any(socket in readable for socket in sockets):
                del self._parked[task]
                self._ready.append(task)
