"""What `p2pfl topology show` says about a time-varying topology: period, peers per round, mixing speed.

A single round of a sparse sequence is disconnected (its spectral gap is 0), so the useful measure is
the contraction of a window of rounds: ||W_(T-1) ... W_0 - J/n||_2, how far the product is from exact
averaging (0 for the one-peer exponential graph over one period when n is a power of two).
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from p2pfl.topologies.dynamic import TopologySequence, round_matrix


def round_gap(matrix: np.ndarray) -> float:
    """1 - ||W - J/n||_2: for a symmetric W this is 1 - |lambda_2|, for a directed one its singular-value form."""
    n = len(matrix)
    return max(0.0, float(1.0 - np.linalg.norm(matrix - np.full((n, n), 1.0 / n), 2)))


def peers_of(graph: nx.Graph, agent: int) -> set[int]:
    if graph.is_directed():
        return set(graph.predecessors(agent)) | set(graph.successors(agent))
    return set(graph[agent])


def describe_sequence(sequence: TopologySequence, window: int = 16) -> dict[str, float | int | str]:
    """Facts over one period (or `window` rounds for the random kinds, which have none)."""
    rounds = sequence.period or window
    n = sequence.agents
    graphs = [sequence.graph(t) for t in range(rounds)]
    product = np.eye(n)
    for graph in graphs:
        product = round_matrix(graph) @ product
    contraction = float(np.linalg.norm(product - np.full((n, n), 1.0 / n), 2))
    peers = [len(peers_of(g, i)) for g in graphs for i in range(n)]
    sent = [g.out_degree(i) if g.is_directed() else g.degree(i) for g in graphs for i in range(n)]
    union = sequence.union(rounds)
    return {
        "agents": n,
        "period": sequence.period if sequence.period else "none (random)",
        "window": rounds,
        "peers_per_round": f"{min(peers)}-{max(peers)}" if min(peers) != max(peers) else str(peers[0]),
        "sent_per_round": float(np.mean(sent)),
        "mean_round_gap": float(np.mean([round_gap(round_matrix(g)) for g in graphs])),
        "contraction": contraction,
        "rate_per_round": contraction ** (1.0 / rounds),
        "union_degree": f"{min(d for _, d in union.degree)}-{max(d for _, d in union.degree)}",
    }
