"""Fault injection in the exchange, in the spirit of hivemind's tests: a subclass of the real ZeroMQ
exchange that fails at a named point for a window of rounds. Four agents on a loopback ring, agent 2
faulty; the others must finish every round with results, and count what they dropped or missed."""

from __future__ import annotations

import math
import os
import threading
import time

import pytest

from p2pfl.agents.agent import AgentLoop
from p2pfl.agents.setup import prepare
from p2pfl.transport import ZmqExchange
from tests.conftest import small_config

FAULTY = 2
ROUNDS = 24
WINDOW = range(8, 12)  # the fault is active in these rounds (crash: from the first one on)
TIMEOUT = 1.0


class Crash(Exception):
    pass


class FaultyExchange(ZmqExchange):
    """Named points: crash (dies before sending), slow (sleeps past the round timeout before sending),
    drop (the message never leaves), garbage (random bytes in place of the frames), truncate (last
    frame lost)."""

    def __init__(self, *args, fault: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fault = fault

    def _send(self, peer, frames):
        active = self._round in WINDOW or (self.fault == "crash" and self._round >= WINDOW.start)
        if active:
            if self.fault == "crash":
                raise Crash(f"agent {self.agent_id} crashed in round {self._round}")
            if self.fault == "slow":
                time.sleep(1.5 * TIMEOUT / 2)  # two neighbours: 1.5 timeouts per round in all
            if self.fault == "drop":
                return True
            if self.fault == "garbage":
                frames = [os.urandom(len(memoryview(f))) for f in frames]
            if self.fault == "truncate":
                frames = frames[:-1]
        return super()._send(peer, frames)


def run_ring(tmp_path, fault: str) -> tuple[dict, dict, dict]:
    config = small_config(agents=4, rounds=ROUNDS, eval_every=ROUNDS, network__round_timeout=TIMEOUT)
    setup = prepare(config)
    exchanges, results, errors = {}, {}, {}
    try:
        for i in range(4):
            neighbours = {j: config.address(j) for j in setup.graph[i]}
            kind = FaultyExchange if i == FAULTY else ZmqExchange
            extra = {"fault": fault} if i == FAULTY else {}
            exchanges[i] = kind(i, config.address(i), neighbours, setup.run_id, TIMEOUT, **extra)
        loops = {i: AgentLoop(config, i, setup.graph, setup.dataset, exchanges[i], tmp_path) for i in range(4)}

        def body(i: int) -> None:
            try:
                results[i] = loops[i].run()
            except Crash as exc:
                errors[i] = exc
                exchanges[i].close()  # a dead process's sockets close with it
                exchanges.pop(i)

        threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "an agent hung"
        stats = {i: loops[i].exchange.stats for i in range(4)}
    finally:
        for exchange in exchanges.values():
            exchange.close()
    return results, errors, stats


@pytest.mark.parametrize("fault", ["crash", "slow", "drop", "garbage", "truncate"])
def test_the_others_finish_whatever_fails_in_one_agents_exchange(tmp_path, fault):
    results, errors, stats = run_ring(tmp_path, fault)
    survivors = [0, 1, 3] if fault == "crash" else [0, 1, 2, 3]
    assert sorted(results) == survivors
    for i in survivors:
        assert results[i]["round"] == ROUNDS - 1 and math.isfinite(results[i]["loss"])
        assert 0 < results[i]["test_accuracy"] <= 1
    neighbours = (1, 3)
    if fault == "crash":
        assert isinstance(errors[FAULTY], Crash)
    if fault in ("crash", "slow", "drop"):  # missed: absent for those rounds, never waited for forever
        assert all(stats[i].absent[FAULTY] >= 1 for i in neighbours)
    if fault in ("garbage", "truncate"):  # received but invalid: dropped and counted
        assert all(sum(stats[i].dropped.values()) >= len(WINDOW) for i in neighbours)
    if fault != "crash":  # the faulty agent itself went back to normal after the window
        assert results[FAULTY]["neighbours_heard"] == 2
