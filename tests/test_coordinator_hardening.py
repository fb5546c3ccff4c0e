"""A diverged or invalid client reply (NaN losses or parameters, n = 0) is dropped for the round, never fatal:
the coordinator loop runs in-process over a scripted exchange that answers for the clients."""

import json
import logging

import numpy as np
import pytest
import torch

from p2pfl.agents import rundir
from p2pfl.agents.federated import CoordinatorLoop, unusable
from p2pfl.agents.setup import prepare
from p2pfl.algorithms.federated import group_average, ifca_assign, weighted_average
from tests.conftest import small_config

NAN_LOSSES, ZERO_N, NAN_MODEL = 2, 3, 4  # the misbehaving clients; 1 and 5 are sound


class ScriptedExchange:
    """The coordinator's side of the seam: requests go nowhere, replies are built from the expected specs."""

    agent_id = 0

    def __init__(self, seed: int = 0):
        self.rng = torch.Generator().manual_seed(seed)

    def send(self, round, tag, outbox):
        pass

    def exchange(self, round, tag, outbox, *, timeout=None):  # the start-up hello: every client is up
        return {c: {"round": torch.tensor([0])} for c in outbox}

    def mark_down(self, peer, reason):
        pass

    def collect(self, round, tag, peers, *, expect=None, timeout=None):
        return {c: self.reply(tag, c, expect[c]) for c in peers}

    def reply(self, tag, client, spec):
        out = {name: torch.rand(s.shape, generator=self.rng, dtype=getattr(torch, s.dtype)) for name, s in spec.items()}
        if "n" in out:
            out["n"] = torch.tensor([0.0 if client == ZERO_N else 50.0])
        if "losses" in out and client == NAN_LOSSES:
            out["losses"][0] = float("nan")
        if "model" in out and client == NAN_MODEL:
            out["model"][3] = float("inf")
        return out


@pytest.mark.parametrize("algorithm", ["clove", "ifca", "fedavg"])
def test_a_diverged_client_is_dropped_for_the_round_not_fatal(tmp_path, algorithm, caplog):
    config = small_config(agents=6, rounds=3, algorithm=algorithm,
                          options={"models": 2, "clusters": 2, "client_timeout": 1.0})
    setup = prepare(config)
    loop = CoordinatorLoop(config, setup.dataset, ScriptedExchange(), tmp_path)
    with caplog.at_level(logging.WARNING, logger="p2pfl.federated"):
        records = loop.run()
    assert len(records) == loop.method.total_rounds + 1
    for record in records:
        if record["round"] < loop.method.total_rounds:  # rounds that train
            assert ZERO_N in record["invalid"] and NAN_MODEL in record["invalid"]  # n = 0, inf model
        if "assignment" in record:  # rounds that evaluate every model on every client
            assert NAN_LOSSES in record["invalid"]  # its loss vector
        assignment = record.get("assignment", {})
        assert str(NAN_LOSSES) not in assignment  # not silently given a model
        assert set(record["absent"]) >= set(record["invalid"])
    assert all(torch.isfinite(m).all() for m in loop.method.models)
    unusable_lines = [r for r in caplog.records if "unusable" in r.getMessage()]
    assert sorted(int(r.getMessage().split("client ")[1].split()[0]) for r in unusable_lines) == \
        sorted({NAN_LOSSES, ZERO_N, NAN_MODEL})  # once per client, not once per round
    rows = [json.loads(line) for line in rundir.metrics_path(tmp_path, 0).read_text().splitlines()]
    assert rows[-1]["invalid"] == records[-1]["invalid"]


def test_unusable_names_the_problem():
    assert unusable({"model": torch.ones(3), "n": torch.tensor([5.0])}) is None
    assert "non-finite losses" == unusable({"losses": torch.tensor([0.1, float("nan")])})
    assert "positive sample count" in unusable({"model": torch.ones(3), "n": torch.tensor([0.0])})


def test_aggregation_math_refuses_invalid_input_explicitly():
    a, b = torch.zeros(2), torch.full((2,), 4.0)
    assert weighted_average([a, b], [0, 3]).tolist() == [4.0, 4.0]  # n = 0 has no weight, no ZeroDivisionError
    with pytest.raises(ValueError, match="no positive sample count"):
        weighted_average([a], [0])
    assert group_average({1: a, 2: b}, {1: "x", 2: "y"}, {1: 0.0, 2: 1.0}).keys() == {"y"}
    with pytest.raises(ValueError, match="NaN"):
        ifca_assign(np.array([[0.1, 0.2], [np.nan, 0.3]]))
