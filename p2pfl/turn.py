"""Turns: at most a few of a process's agent threads run at once, the rest wait, in order, without a fight.

Agents packed as threads of one process (a packed worker, `--simulate`) share its GIL, and torch and
ZeroMQ release it around every call. With all of them runnable, each release hands the GIL to another
thread: a futex wake and a context switch, several times per tensor op (55% of a packed worker's gossip
CPU went to the kernel, most of it in task switching). A turn is held while an agent computes and given up
where it would block anyway (waiting for neighbours' messages), while it evaluates, between rounds when a
mate waits, and before an exchange hands its mates their messages and before it collects (so the mates go
through a round's parts together), so the threads take turns round by round instead of op by op. The order of
the math does not change, only when each agent's thread runs.

Those points are this module's functions (waiting, sleep, pass_on), whatever the agents run as: threads taking
a Turn (`--in-process`, `network.scheduler: threads`, the default) or the greenlets of a hub (hub.py,
`network.scheduler: greenlets`), which gives way at the same points without a thread switch.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager, nullcontext
from typing import ContextManager, Iterator, Protocol

NOTHING = nullcontext()  # reusable: a context that does nothing, entered by every wait outside a turn
_held = threading.local()  # the scheduler (a Turn it holds, or its Hub) of the current thread, if any


class Turn:
    """`slots` threads run at a time; the others wait first come, first served (an agent whose neighbours'
    messages arrived runs once those before it had their go, never starved by a busier mate)."""

    def __init__(self, slots: int = 1):
        if slots < 1:
            raise ValueError("a Turn needs at least one slot")
        self._lock = threading.Lock()
        self._free = slots
        self._queue: deque[threading.Event] = deque()

    def take(self) -> None:
        with self._lock:
            if self._free and not self._queue:
                self._free -= 1
                return
            mine = threading.Event()
            self._queue.append(mine)
        mine.wait()  # the slot is handed over by give(), never free for a newcomer to snatch

    def give(self) -> None:
        with self._lock:
            if self._queue:
                self._queue.popleft().set()
            else:
                self._free += 1

    def queued(self) -> int:
        """Threads waiting for a slot."""
        return len(self._queue)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Run the body with a slot; exchanges and the agent loop give it up where they wait (waiting(), pass_on())."""
        self.take()
        with installed(self):
            try:
                yield
            finally:
                self.give()

    @contextmanager
    def waiting(self) -> Iterator[None]:
        self.give()
        try:
            yield
        finally:
            self.take()

    def pass_on(self) -> None:
        if self.queued():
            self.give()
            self.take()

    def sleep(self, seconds: float) -> None:
        with self.waiting():
            time.sleep(seconds)

    def breathe(self) -> None:
        """Nothing: long work is done in waiting(), beside the agent that holds the turn."""


class Scheduler(Protocol):
    """What the agents of one process take turns in: a Turn (threads), or a hub.Hub (greenlets of one thread)."""

    def held(self) -> ContextManager[None]: ...

    def waiting(self) -> ContextManager[None]: ...

    def pass_on(self) -> None: ...

    def sleep(self, seconds: float) -> None: ...

    def breathe(self) -> None: ...


@contextmanager
def installed(scheduler: Scheduler | None) -> Iterator[None]:
    """The calling thread's agents take turns in `scheduler` for the body."""
    previous = current()
    _held.turn = scheduler
    try:
        yield
    finally:
        _held.turn = previous


def current() -> Scheduler | None:
    return getattr(_held, "turn", None)


def socket_wait():
    """The hub's wait_readable(sockets, seconds) when this agent is a hub's greenlet (hub.py), else None: there
    a blocking receive would stop every agent of the thread, so a transport waits through the hub instead."""
    return getattr(current(), "wait_readable", None)


def mate_ring():
    """The hub's ring(token) when this agent is a hub's greenlet (hub.py), else None: a hand-over to a mate of
    the same hub wakes it without a doorbell."""
    return getattr(current(), "ring", None)


def waiting() -> ContextManager[None]:
    """Around a blocking wait: let another agent run meanwhile (nothing to do for a thread without a turn;
    under a hub, only the hub's own waits give way: what runs here holds the thread). The scheduler's own
    context, not one wrapped around it: every wait of every round enters it."""
    scheduler = current()
    return NOTHING if scheduler is None else scheduler.waiting()


def sleep(seconds: float) -> None:
    """time.sleep that lets another agent run meanwhile."""
    scheduler = current()
    if scheduler is None:
        time.sleep(seconds)
    else:
        scheduler.sleep(seconds)


def pass_on() -> None:
    """Between rounds: the agents waiting for a slot go first, so packed agents keep pace round by round even
    when they never block (local-only training)."""
    scheduler = current()
    if scheduler is not None:
        scheduler.pass_on()


def breathe() -> None:
    """Between the pieces of a long stretch of work in waiting() (a test-set pass): under a hub, where that work
    holds the thread, the other agents run a while; threads need nothing, theirs runs beside the turn."""
    scheduler = current()
    if scheduler is not None:
        scheduler.breathe()
