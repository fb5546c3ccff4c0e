"""Mixing weights of a gossip graph, their checks and the spectral gap."""

from __future__ import annotations

import networkx as nx
import numpy as np

from p2pfl.errors import UserError

SELF_WEIGHT = "self_weight"


def assign_mixing_weights(graph: nx.Graph) -> nx.Graph:
    """Uniform 1/(deg+1) on regular graphs, Metropolis-Hastings otherwise; both doubly stochastic."""
    degrees = dict(graph.degree)
    regular = len(set(degrees.values())) == 1
    for u, v in graph.edges:
        graph[u][v]["weight"] = 1.0 / (1 + (degrees[u] if regular else max(degrees[u], degrees[v])))
    for u in graph.nodes:
        graph.nodes[u][SELF_WEIGHT] = 1.0 - sum(graph[u][v]["weight"] for v in graph[u])
    return graph


def mixing_matrix(graph: nx.Graph) -> np.ndarray:
    """W with W[i, j] = w_ij and W[i, i] = w_ii, nodes in order 0..n-1."""
    nodes = sorted(graph.nodes)
    matrix = nx.to_numpy_array(graph, nodelist=nodes, weight="weight")
    for i, u in enumerate(nodes):
        matrix[i, i] = graph.nodes[u][SELF_WEIGHT]
    return matrix


def validate(graph: nx.Graph, tol: float = 1e-9) -> None:
    """Raise a UserError unless the graph is a usable gossip graph."""
    n = graph.number_of_nodes()
    if n < 2:
        raise UserError(f"a run needs at least 2 agents, got {n}; raise --agents")
    if sorted(graph.nodes) != list(range(n)):
        raise UserError("topology nodes must be 0..n-1; relabel the graph file")
    if nx.number_of_selfloops(graph):
        raise UserError("topology has self-loops; remove them (self weights are implicit)")
    if not nx.is_connected(graph):
        parts = nx.number_connected_components(graph)
        raise UserError(f"topology is disconnected ({parts} components): gossip cannot reach consensus; "
                        "add edges, raise the edge probability, or pick another topology")
    check_doubly_stochastic(mixing_matrix(graph), symmetric=True, tol=tol)


def check_doubly_stochastic(matrix: np.ndarray, *, symmetric: bool, tol: float = 1e-9) -> None:
    """Gossip preserves the average only if every row and every column sums to 1 (and no entry is negative)."""
    if (matrix < -tol).any():
        raise UserError("mixing matrix has negative entries; use Metropolis-Hastings weights")
    if symmetric and not np.allclose(matrix, matrix.T, atol=1e-9):
        raise UserError("mixing matrix is not symmetric")
    if not (np.allclose(matrix.sum(0), 1, atol=1e-9) and np.allclose(matrix.sum(1), 1, atol=1e-9)):
        raise UserError("mixing matrix is not doubly stochastic; use assign_mixing_weights")


def spectral_gap(graph: nx.Graph) -> float:
    """1 - |lambda_2| of W: the larger, the faster gossip averages."""
    eig = np.sort(np.abs(np.linalg.eigvalsh(mixing_matrix(graph))))[::-1]
    return float(1.0 - eig[1])
