"""Topologies that change every round: the sequences, their gossip in the algorithms and the agent loop."""

import json
import os
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest
import torch

from p2pfl.agents import rundir
from p2pfl.agents.setup import prepare
from p2pfl.agents.simulate import run_simulation
from p2pfl.algorithms.base import flat_params, set_flat_params
from p2pfl.config import OptimConfig
from p2pfl.errors import UserError
from p2pfl.topologies import DYNAMIC_TOPOLOGIES, TopologySequence, build_topology
from p2pfl.topologies import dynamic
from p2pfl.topologies.dynamic import round_matrix
from p2pfl.topologies.sequence_facts import describe_sequence
from tests.conftest import ROOT, child_env, small_config
from tests.helpers import make_agents, step_all


def consensus_error(x: np.ndarray) -> float:
    return float(np.abs(x - x.mean(axis=0)).max())


@pytest.mark.parametrize("n", [8, 16])
def test_one_peer_exponential_averages_exactly_in_log2_n_rounds(n):
    sequence = TopologySequence("one-peer-exponential", n)
    tau = int(np.log2(n))
    assert sequence.period == tau
    x0 = np.random.default_rng(n).normal(size=(n, 5))
    for start in range(tau):  # any tau consecutive rounds
        x = x0
        for round_ in range(start, start + tau):
            if round_ == start + tau - 1:
                assert consensus_error(x) > 1e-2  # one round short of tau is not yet the average
            x = round_matrix(sequence.graph(round_)) @ x
        assert consensus_error(x) < 1e-6
        np.testing.assert_allclose(x.mean(axis=0), x0.mean(axis=0), atol=1e-12)


@pytest.mark.parametrize("kind", DYNAMIC_TOPOLOGIES)
@pytest.mark.parametrize("n", [8, 9, 16])
def test_every_round_matrix_is_doubly_stochastic(kind, n):
    sequence = TopologySequence(kind, n, seed=4, peers=2)
    for round_ in range(24):
        graph = sequence.graph(round_)
        w = round_matrix(graph)
        assert (w >= 0).all()
        np.testing.assert_allclose(w.sum(0), 1, atol=1e-12)
        np.testing.assert_allclose(w.sum(1), 1, atol=1e-12)
        if not graph.is_directed():
            np.testing.assert_allclose(w, w.T)
        if kind == "one-peer-exponential":  # one message out, one in
            assert all(graph.out_degree(i) == 1 and graph.in_degree(i) == 1 for i in range(n))
        if kind == "random-matching":
            assert max(d for _, d in graph.degree) == 1
            assert sum(d == 0 for _, d in graph.degree) == n % 2


def test_a_round_that_is_not_doubly_stochastic_is_refused(monkeypatch):
    def lopsided(n, round_, seed, peers):
        graph = nx.Graph()
        graph.add_nodes_from(range(n), self_weight=0.5)
        graph.add_edge(0, 1, weight=0.5)  # agents 2.. keep half of nothing: rows do not sum to 1
        return graph

    monkeypatch.setitem(dynamic.SEQUENCES, "random-matching", lopsided)
    with pytest.raises(UserError, match="doubly stochastic"):
        TopologySequence("random-matching", 4, seed=123456).graph(0)


def edges_of(kind: str, n: int, seed: int, rounds: int) -> list:
    sequence = TopologySequence(kind, n, seed, peers=2)
    return [sorted(sequence.graph(t).edges(data="weight")) for t in range(rounds)]


SAME_IN_A_CHILD = """
import json, sys
from tests.test_dynamic_topologies import edges_of
print(json.dumps(edges_of(sys.argv[1], 10, 7, 12)))
"""


@pytest.mark.parametrize("kind", ["random-matching", "peer-sampling"])
def test_every_agent_derives_the_same_sequence_from_the_seed(kind):
    """Another process (other hash salt) computes the same graphs; another seed gives others."""
    child = subprocess.run([sys.executable, "-c", SAME_IN_A_CHILD, kind], cwd=ROOT, capture_output=True, text=True,
                           env=child_env(PYTHONHASHSEED="12345"), timeout=60)
    assert child.returncode == 0, child.stderr
    mine = edges_of(kind, 10, 7, 12)
    assert json.loads(child.stdout) == json.loads(json.dumps(mine))
    assert edges_of(kind, 10, 8, 12) != mine
    assert len({json.dumps(round_edges) for round_edges in mine}) > 1  # it does change per round


@pytest.mark.parametrize("kind", DYNAMIC_TOPOLOGIES)
def test_what_an_agent_sends_is_what_its_peer_expects(kind):
    sequence = TopologySequence(kind, 9, seed=1, peers=2)
    for round_ in range(10):
        views = [sequence.mixing(i, round_) for i in range(9)]
        for i, view in enumerate(views):
            for j in view.send_to if view.send_to is not None else view.weights:
                assert i in views[j].weights
            assert view.self_weight + sum(view.weights.values()) == pytest.approx(1)


def test_the_links_are_the_union_of_the_rounds():
    union = TopologySequence("one-peer-exponential", 8).union(rounds=100)
    assert sorted(union.edges) == sorted(build_topology("exponential", 8).edges)
    matching = TopologySequence("random-matching", 8, seed=3)
    met = {tuple(sorted(e)) for t in range(5) for e in matching.graph(t).edges}
    assert {tuple(sorted(e)) for e in matching.union(5).edges} == met
    with pytest.raises(UserError, match="run more rounds"):
        matching.union(1)  # one matching never links all agents
    with pytest.raises(UserError, match="degree < agents"):
        TopologySequence("peer-sampling", 4, peers=4).graph(0)


def test_describe_sequence_period_peers_and_contraction():
    facts = describe_sequence(TopologySequence("one-peer-exponential", 16))
    assert facts["period"] == 4 and facts["sent_per_round"] == 1
    assert facts["contraction"] < 1e-9
    random = describe_sequence(TopologySequence("random-matching", 16, seed=0), window=32)
    assert random["period"] == "none (random)" and random["peers_per_round"] == "1"
    assert 0 < random["contraction"] < 0.1


def test_dsgd_gossip_follows_each_rounds_directed_matrix():
    """D-PSGD's gossip on the one-peer exponential graph is x_{t+1} = W_t x_t with W_t not symmetric (the
    transpose would fail), and after log2(n) rounds every agent holds the average."""
    n = 8
    sequence = TopologySequence("one-peer-exponential", n)
    gossip_only = OptimConfig(lr=0.0, momentum=0.0, weight_decay=0.0)  # the local step leaves x as it is
    agents = make_agents("dpsgd", sequence.union(100), gossip_only)
    g = torch.Generator().manual_seed(0)
    for agent in agents:  # different starting points, so mixing shows
        set_flat_params(agent.ctx.model, torch.randn(flat_params(agent.ctx.model).shape, generator=g))
    x = torch.stack([flat_params(a.ctx.model) for a in agents]).double()
    for round_ in range(3):
        for i, agent in enumerate(agents):
            agent.ctx.use_round(sequence.mixing(i, round_))
        batches = [(torch.randn(4, 3, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(n)]
        step_all(agents, round_, batches)
        x = torch.tensor(round_matrix(sequence.graph(round_))) @ x
        got = torch.stack([flat_params(a.ctx.model) for a in agents]).double()
        torch.testing.assert_close(got, x, rtol=1e-5, atol=1e-6)
        assert all(a.ctx.exchange.stats.sent_by_tag["params"] > 0 for a in agents)
    assert consensus_error(x.numpy()) < 1e-6  # log2(8) = 3 rounds: every agent holds the average
    sent = {a.ctx.exchange.stats.sent_by_tag["params"] for a in agents}
    assert len(sent) == 1  # one message per round each: 3 messages of the same size


def run_metrics(run_dir, agents):
    return [[json.loads(line) for line in rundir.metrics_path(run_dir, a).read_text().splitlines()]
            for a in range(agents)]


@pytest.mark.parametrize("algorithm", ["dsgdm-n", "qgm", "ccl"])
def test_a_digits_run_on_the_one_peer_exponential_graph_learns_with_one_message_per_round(tmp_path, algorithm):
    config = small_config(agents=8, rounds=60, algorithm=algorithm)
    config.topology.kind = "one-peer-exponential"
    run_simulation(prepare(config), tmp_path)
    metrics = run_metrics(tmp_path, 8)
    assert min(m[-1]["test_accuracy"] for m in metrics) > 0.6  # chance: 0.1
    one_message = metrics[0][0]["bytes_by_tag"]["params"]
    assert all(r["neighbours_heard"] == 1 and r["bytes_by_tag"]["params"] == one_message for m in metrics for r in m)
    static = small_config(agents=8, rounds=1, algorithm=algorithm)
    static.topology.kind = "exponential"
    run_simulation(prepare(static), tmp_path / "static")
    assert run_metrics(tmp_path / "static", 8)[0][0]["bytes_by_tag"]["params"] == 5 * one_message  # degree 5


def test_max_lag_is_how_far_peers_run_ahead_of_a_late_agent():
    """One-peer exponential: a late agent holds back 2, 4, ... agents, all after log2(n) rounds."""
    assert [TopologySequence("one-peer-exponential", n).max_lag(100) for n in (8, 16, 64)] == [3, 4, 6]
    assert TopologySequence("random-matching", 16).max_lag(200) > 4  # beyond the fixed graphs' window
    config = small_config(agents=64, rounds=20)
    config.topology.kind = "one-peer-exponential"
    assert prepare(config).round_window == 6


def test_a_late_agent_gets_the_messages_of_peers_running_rounds_ahead(tmp_path, monkeypatch):
    """One-peer exponential on 64 agents: while agent 0 is late, peers it does not hold back run up to
    log2(64) - 1 = 5 rounds ahead and send it their message for that round; it must be kept, not dropped as
    too far ahead (which left agent 0 waiting a round timeout and mixing nobody in)."""
    import time

    from p2pfl.exchange import InMemoryExchange

    exchange = InMemoryExchange.exchange

    def late(self, round, tag, outbox, **kwargs):
        if self.agent_id == 0 and round == 5 and tag == "params":
            time.sleep(1.0)
        return exchange(self, round, tag, outbox, **kwargs)

    monkeypatch.setattr(InMemoryExchange, "exchange", late)
    config = small_config(agents=64, rounds=12, algorithm="dpsgd")
    config.topology.kind = "one-peer-exponential"
    config.network.round_timeout = 10.0  # generous: only a dropped message waits it out
    run_simulation(prepare(config), tmp_path)
    rows = [r for m in run_metrics(tmp_path, 64) for r in m]
    assert all(r["neighbours_heard"] == 1 for r in rows)
    assert sum(r["dropped"] for r in rows) == 0
