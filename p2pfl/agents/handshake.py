"""The hello a restarted peer repeats until its neighbours answer with the round they are at."""

from __future__ import annotations

import time

from p2pfl import turn
from p2pfl.constants import HELLO_ROUND, TAG_HELLO
from p2pfl.exchange import Exchange

RESUME_GRACE_SECONDS = 3.0


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
