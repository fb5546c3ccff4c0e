"""Graph builders: each returns an undirected `nx.Graph` on nodes 0..n-1 (weights come later)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import networkx as nx

from p2pfl.errors import UserError


def ring(n: int) -> nx.Graph:
    """Each agent talks to its two neighbours i±1 mod n."""
    return nx.cycle_graph(n)


def torus_shape(n: int) -> tuple[int, int]:
    """The most square rows x cols = n with both sides >= 2."""
    for rows in range(int(math.isqrt(n)), 1, -1):
        if n % rows == 0:
            return rows, n // rows
    raise UserError(f"torus needs a composite number of agents, got {n}; use e.g. {n + 1 if n % 2 else n} "
                    "agents or the 'circulant' topology")


def torus(n: int) -> nx.Graph:
    """2-D grid with wrap-around; up to four neighbours per agent."""
    rows, cols = torus_shape(n)
    grid = nx.grid_2d_graph(rows, cols, periodic=True)
    return nx.convert_node_labels_to_integers(grid, ordering="sorted")


def circulant(n: int, offsets: tuple[int, ...] = (1, 4)) -> nx.Graph:
    """Agent i talks to i±k mod n for each offset k (the CCL paper's 'torus': offsets 1 and 4)."""
    return nx.circulant_graph(n, [k % n for k in offsets if k % n])


def exponential(n: int) -> nx.Graph:
    """Agent i talks to i±2^k mod n for every 2^k < n (undirected, so mixing stays symmetric)."""
    return nx.circulant_graph(n, [2**k for k in range(int(math.log2(n)) + 1) if 2**k < n])


def complete(n: int) -> nx.Graph:
    return nx.complete_graph(n)


def star(n: int) -> nx.Graph:
    """Agent 0 in the middle: the coordinator topology of the centralized methods."""
    return nx.star_graph(n - 1)


def random_regular(n: int, degree: int = 3, seed: int = 0) -> nx.Graph:
    if degree >= n or (n * degree) % 2:
        raise UserError(f"random-regular needs degree < agents and agents*degree even, got degree={degree}, "
                        f"agents={n}; change --degree or --agents")
    return nx.random_regular_graph(degree, n, seed=seed)


def erdos_renyi(n: int, p: float = 0.3, seed: int = 0) -> nx.Graph:
    return nx.erdos_renyi_graph(n, p, seed=seed)


def from_file(path: str | Path) -> nx.Graph:
    """An edge list ('u v' per line) or a GraphML file; nodes are relabelled 0..n-1 in sorted order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"topology file {path} does not exist; give the path of an edge list or .graphml file")
    try:
        graph = nx.read_graphml(path) if path.suffix.lower() == ".graphml" else nx.read_edgelist(path, data=False)
    except Exception as exc:  # networkx raises many types for a malformed file
        raise UserError(f"cannot read topology file {path}: {exc}; expected 'u v' lines or GraphML") from exc
    graph = nx.Graph(graph)
    try:
        order = sorted(graph.nodes, key=int)
    except ValueError:
        order = sorted(graph.nodes, key=str)
    return nx.relabel_nodes(graph, {node: i for i, node in enumerate(order)})


BUILDERS: dict[str, Callable[..., nx.Graph]] = {
    "ring": ring,
    "torus": torus,
    "circulant": circulant,
    "exponential": exponential,
    "complete": complete,
    "star": star,
    "random-regular": random_regular,
    "erdos-renyi": erdos_renyi,
}
