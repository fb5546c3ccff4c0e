"""Turns: at most a few of a process's agent threads run at once, the rest wait, in order, without a fight.

Agents packed as threads of one process (a packed worker, `--simulate`) share its GIL, and torch and
ZeroMQ release it around every call. With all of them runnable, each release hands the GIL to another
thread: a futex wake and a context switch, several times per tensor op (55% of a packed worker's gossip
CPU went to the kernel, most of it in task switching). A turn is held while an agent computes and given up
where it would block anyway (waiting for neighbours' messages), while it evaluates, and between rounds when a
mate waits, so the threads take turns round by round instead of op by op. The order of the math does not change, only when
each agent's thread runs.
"""

from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager
from typing import Iterator

_held = threading.local()  # the Turn the current thread holds, if any


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
        _held.turn = self
        try:
            yield
        finally:
            _held.turn = None
            self.give()


def current() -> Turn | None:
    return getattr(_held, "turn", None)


@contextmanager
def waiting() -> Iterator[None]:
    """Around a blocking wait: let another agent run meanwhile (nothing to do for a thread without a turn)."""
    turn = current()
    if turn is None:
        yield
        return
    turn.give()
    try:
        yield
    finally:
        turn.take()


def pass_on() -> None:
    """Between rounds: the agents waiting for a slot go first, so packed agents keep pace round by round even
    when they never block (local-only training)."""
    turn = current()
    if turn is not None and turn.queued():
        turn.give()
        turn.take()
