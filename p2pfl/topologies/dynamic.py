"""Time-varying gossip graphs: a pure function round -> weighted graph that every agent computes alike.

No agent coordinates with another to learn the round's peers: each one evaluates the same function of
(kind, agents, seed, round), so agent i sends to j in round t exactly when j expects i there.
A round's graph is an `nx.Graph` (symmetric exchange) or an `nx.DiGraph` whose edge j -> i carries
w_ij, the weight with which i mixes in what j sent (the one-peer exponential graph is directed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import networkx as nx
import numpy as np

from p2pfl.errors import UserError
from p2pfl.topologies.mixing import SELF_WEIGHT, assign_mixing_weights, check_doubly_stochastic, mixing_matrix

RoundBuilder = Callable[[int, int, int, int], nx.Graph]  # (agents, round, seed, peers) -> weighted graph


def exponential_period(n: int) -> int:
    """tau = ceil(log2 n): the one-peer exponential graph cycles through distances 2^0 .. 2^(tau-1)."""
    return max(1, math.ceil(math.log2(n)))


def one_peer_exponential(n: int, round_: int, seed: int = 0, peers: int = 1) -> nx.DiGraph:
    """Ying et al. 2021: in round t agent i mixes x_i/2 + x_(i+2^m)/2 with m = t mod tau, so it receives
    from i+2^m and sends to i-2^m. W_t = (I + P^(2^m))/2; for n = 2^tau any tau consecutive W_t multiply
    to the exact average J/n, at one message per agent per round."""
    hop = 2 ** (round_ % exponential_period(n))
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n), **{SELF_WEIGHT: 0.5})
    graph.add_weighted_edges_from(((i + hop) % n, i, 0.5) for i in range(n))
    return graph


def round_rng(seed: int, round_: int, salt: int) -> np.random.Generator:
    """The same stream on every agent and every machine (no process-salted hash anywhere)."""
    return np.random.default_rng(np.random.SeedSequence([seed % 2**63, round_, salt]))


def random_matching(n: int, round_: int, seed: int = 0, peers: int = 1) -> nx.Graph:
    """A uniformly random perfect matching per round (one agent sits out when n is odd); pairs average."""
    order = round_rng(seed, round_, 1).permutation(n)
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(zip(order[0:n - 1:2].tolist(), order[1:n:2].tolist()))
    return assign_mixing_weights(graph)


def peer_sampling(n: int, round_: int, seed: int = 0, peers: int = 3) -> nx.Graph:
    """Each agent draws `peers` others uniformly per round (Epidemic Learning's sampling); the exchange is
    made symmetric and weighted Metropolis-Hastings, so the round's matrix stays doubly stochastic."""
    if not 1 <= peers < n:
        raise UserError(f"peer-sampling needs 1 <= topology.degree < agents (peers drawn per round), got "
                        f"degree={peers}, agents={n}")
    rng = round_rng(seed, round_, 2)
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    for i in range(n):
        others = np.delete(np.arange(n), i)
        graph.add_edges_from((i, int(j)) for j in rng.choice(others, size=peers, replace=False))
    return assign_mixing_weights(graph)


SEQUENCES: dict[str, RoundBuilder] = {
    "one-peer-exponential": one_peer_exponential,
    "random-matching": random_matching,
    "peer-sampling": peer_sampling,
}
DYNAMIC_TOPOLOGIES = tuple(SEQUENCES)


def round_matrix(graph: nx.Graph) -> np.ndarray:
    """W_t with W[i, j] = w_ij; for a DiGraph the edge j -> i holds w_ij."""
    if not graph.is_directed():
        return mixing_matrix(graph)
    n = graph.number_of_nodes()
    matrix = nx.to_numpy_array(graph, nodelist=range(n), weight="weight").T
    matrix[np.diag_indices(n)] = [graph.nodes[i][SELF_WEIGHT] for i in range(n)]
    return matrix


@dataclass(frozen=True)
class RoundMixing:
    """One agent's part of W_t: whom it mixes in (w_ij), its own weight, whom it sends to.
    `send_to` None: the same peers both ways (a symmetric round)."""

    weights: dict[int, float]
    self_weight: float
    send_to: tuple[int, ...] | None


@dataclass(frozen=True)
class TopologySequence:
    kind: str
    agents: int
    seed: int = 0
    peers: int = 3  # peer-sampling: peers each agent draws per round

    def __post_init__(self) -> None:
        if self.kind not in SEQUENCES:
            raise UserError(f"unknown dynamic topology {self.kind!r}; choose one of {', '.join(SEQUENCES)}")
        if self.agents < 2:
            raise UserError(f"a run needs at least 2 agents, got {self.agents}; raise --agents")

    @property
    def period(self) -> int | None:
        """Rounds after which the graphs repeat; None for the random kinds."""
        return exponential_period(self.agents) if self.kind == "one-peer-exponential" else None

    def graph(self, round_: int) -> nx.Graph:
        """The weighted graph of `round_`, its matrix checked doubly stochastic."""
        return round_graph(self, round_)

    def mixing(self, agent: int, round_: int) -> RoundMixing:
        graph = self.graph(round_)
        if graph.is_directed():
            return RoundMixing({j: float(graph[j][agent]["weight"]) for j in sorted(graph.predecessors(agent))},
                               float(graph.nodes[agent][SELF_WEIGHT]), tuple(sorted(graph.successors(agent))))
        return RoundMixing({j: float(graph[agent][j]["weight"]) for j in sorted(graph[agent])},
                           float(graph.nodes[agent][SELF_WEIGHT]), None)

    def max_lag(self, rounds: int) -> int:
        """The most rounds an agent can run ahead of one that is late: an agent needs the round's message of
        everyone it mixes in, so the agents a late one holds back grow round by round until they are all;
        before that the others go on. Fixed graphs keep neighbours within a round of each other."""
        lag, needs = 0, {}  # needs[t][a, c]: a mixes in c's message of round t; kept for the rounds in reach

        def needs_in(round_: int) -> np.ndarray:
            if round_ not in needs:
                needs[round_] = (round_matrix(self.graph(round_)) > 0).astype(float)  # float: BLAS matmul
            return needs[round_]

        for start in range(min(rounds, self.period or rounds)):
            needs.pop(start - 1, None)
            held = np.eye(self.agents)  # held[a, b] > 0: a cannot pass this round while b is late
            round_ = start
            while not held.all() and round_ < rounds + (self.period or 0):
                held = ((held + needs_in(round_) @ held) > 0).astype(float)
                round_ += 1
            lag = max(lag, round_ - start)
        return lag

    def union(self, rounds: int) -> nx.Graph:
        """Every pair that exchanges in some round < `rounds`: the links each agent opens up front (exact, as
        the sequence is known in advance); weighted Metropolis-Hastings for drawing, checked connected."""
        union = nx.Graph()
        union.add_nodes_from(range(self.agents))
        complete = self.agents * (self.agents - 1) // 2
        for round_ in range(min(rounds, self.period or rounds)):
            union.add_edges_from(self.graph(round_).edges)
            if union.number_of_edges() == complete:
                break
        if not nx.is_connected(union):
            raise UserError(f"{self.kind} over {rounds} round(s) never links {nx.number_connected_components(union)} "
                            "groups of agents: gossip cannot reach consensus; run more rounds")
        return assign_mixing_weights(union)


@lru_cache(maxsize=64)  # --simulate: every agent thread asks for the same round's graph
def round_graph(sequence: TopologySequence, round_: int) -> nx.Graph:
    graph = SEQUENCES[sequence.kind](sequence.agents, round_, sequence.seed, sequence.peers)
    check_doubly_stochastic(round_matrix(graph), symmetric=not graph.is_directed())
    return graph
