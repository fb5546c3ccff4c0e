"""Gossip graphs: builders, mixing weights, checks, drawing; time-varying sequences in `dynamic`."""

from __future__ import annotations

import networkx as nx

from p2pfl.errors import UserError
from p2pfl.topologies.builders import BUILDERS, from_file
from p2pfl.topologies.dynamic import DYNAMIC_TOPOLOGIES, TopologySequence
from p2pfl.topologies.mixing import assign_mixing_weights, mixing_matrix, spectral_gap, validate

__all__ = ["build_topology", "mixing_matrix", "spectral_gap", "validate", "TOPOLOGIES", "describe",
           "DYNAMIC_TOPOLOGIES", "TopologySequence"]

TOPOLOGIES = tuple(BUILDERS) + ("file",)  # fixed for the whole run; DYNAMIC_TOPOLOGIES change every round


def build_topology(kind: str, agents: int, *, seed: int = 0, degree: int = 3, p: float = 0.3,
                   offsets: tuple[int, ...] = (1, 4), path: str | None = None) -> nx.Graph:
    """Build, weight and validate a gossip graph; every failure is a one-line UserError."""
    if kind == "file" or (path and kind not in BUILDERS):
        if not path:
            raise UserError("topology 'file' needs a path: set topology.path or pass --topology-file")
        graph = from_file(path)
    else:
        if kind not in BUILDERS:
            raise UserError(f"unknown topology {kind!r}; choose one of {', '.join(TOPOLOGIES + DYNAMIC_TOPOLOGIES)}")
        if agents < 2:
            raise UserError(f"a run needs at least 2 agents, got {agents}; raise --agents")
        extra = {"random-regular": {"degree": degree, "seed": seed}, "erdos-renyi": {"p": p, "seed": seed},
                 "circulant": {"offsets": tuple(offsets)}}.get(kind, {})
        graph = BUILDERS[kind](agents, **extra)
    assign_mixing_weights(graph)
    validate(graph)
    return graph


def describe(graph: nx.Graph) -> dict[str, float | int]:
    degrees = [d for _, d in graph.degree]
    return {
        "agents": graph.number_of_nodes(),
        "edges": graph.number_of_edges(),
        "degree_min": min(degrees),
        "degree_max": max(degrees),
        "diameter": nx.diameter(graph),
        "spectral_gap": spectral_gap(graph),
    }
