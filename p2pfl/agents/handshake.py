"""The hello a restarted peer repeats until its neighbours answer with the round they are at."""

from __future__ import annotations

import time

from p2pfl import turn
from p2pfl.constants import HELLO_ROUND, TAG_HELLO
from p2pfl.exchange import Exchange

RESUME_GRACE_SECONDS = 3.0
HELLO_REPEAT_SECONDS = 1.0


def hello_all(exchange: Exchange, hello: dict, peers: list[int], timeout: float) -> set[int]:
    """A fresh start: hello every neighbour and wait until each is heard, repeating the hello once a second to those
    not heard yet; a neighbour is heard by its hello, its answer to ours, or any message of its rounds.

    One hello per neighbour was sent before, and in a loaded suite (2 of 14 runs of one test) a worker's hello to
    a neighbour in the other worker never arrived; that neighbour ran its rounds and this agent waited out the
    whole startup timeout. A repeated hello reaches a neighbour already in its rounds, which answers it
    (exchange._welcome), and that neighbour's round messages, parked here meanwhile, show it is up too."""
    heard: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(heard) < len(peers) and (remaining := deadline - time.monotonic()) > 0:
        pending = [j for j in peers if j not in heard]
        heard.update(exchange.exchange(HELLO_ROUND, TAG_HELLO, {j: hello for j in pending},
                                       timeout=min(HELLO_REPEAT_SECONDS, remaining)))
        heard.update(j for j in pending if exchange.latest_round(j) >= 0)
    return heard


def hello_until_answered(exchange: Exchange, hello: dict, peers: list[int], timeout: float) -> dict:
    """The first hello may sit behind stale messages in a neighbour's queue, so repeat it (once a second).

    Stops when every neighbour answered, or a few seconds after the first answer (a neighbour may be
    dead too), or at the startup deadline."""
    heard: dict = {}
    deadline = time.monotonic() + timeout
    first_answer = None
    while time.monotonic() < deadline and len(heard) < len(peers):
        pending = [j for j in peers if j not in heard]
        asked = time.monotonic()
        heard.update(exchange.exchange(HELLO_ROUND, TAG_HELLO, {j: hello for j in pending}, timeout=1.0))
        turn.sleep(max(0.0, 1.0 - (time.monotonic() - asked)))
        first_answer = first_answer or (time.monotonic() if heard else None)
        if first_answer and time.monotonic() - first_answer > RESUME_GRACE_SECONDS:
            break
    return heard
