"""PNG drawing of a gossip graph in its natural layout, with its degree and spectral gap in the title."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np

from p2pfl.topologies.dynamic import DYNAMIC_TOPOLOGIES
from p2pfl.topologies.mixing import spectral_gap

WRAP_STUB = 0.35  # length of the stubs that stand for a torus' wrap-around edges, in grid cells


def hub_of(graph: nx.Graph) -> int | None:
    """The centre of a star: a node linked to every other one, the others only to it."""
    n = graph.number_of_nodes()
    hubs = [u for u, d in graph.degree if d == n - 1]
    return hubs[0] if len(hubs) == 1 and graph.number_of_edges() == n - 1 else None


def grid_shape(graph: nx.Graph, kind: str) -> tuple[int, int] | None:
    if kind != "torus":
        return None
    from p2pfl.topologies.builders import torus_shape

    try:
        return torus_shape(graph.number_of_nodes())
    except Exception:  # not a composite number: not our torus
        return None


def layout(graph: nx.Graph, kind: str = "") -> dict:
    """Torus on its grid (node r*cols + c at row r, column c), star with the hub in the centre, rings and
    circulants on a circle, anything else (random, from a file) by a force-directed layout."""
    n = graph.number_of_nodes()
    shape = grid_shape(graph, kind)
    if shape:
        rows, cols = shape
        return {u: np.array([u % cols, -(u // cols)], dtype=float) for u in graph.nodes}
    hub = hub_of(graph)
    if hub is not None:
        rim = [u for u in sorted(graph.nodes) if u != hub]
        positions = nx.circular_layout(graph.subgraph(rim))
        positions[hub] = np.zeros(2)
        return positions
    if n > 64:
        return nx.spring_layout(graph, seed=0)
    if kind in ("random-regular", "erdos-renyi", "file"):  # no natural order: let the edges place the nodes
        return nx.kamada_kawai_layout(graph)
    return nx.circular_layout(sorted(graph.nodes))  # ring, circulant, exponential, complete: by id around a circle


def degree_text(graph: nx.Graph) -> str:
    degrees = [d for _, d in graph.degree]
    return f"degree {degrees[0]}" if min(degrees) == max(degrees) else f"degree {min(degrees)}-{max(degrees)}"


def topology_title(graph: nx.Graph, kind: str = "") -> str:
    if kind in DYNAMIC_TOPOLOGIES:  # the drawing is the union of the rounds' graphs: its gap says nothing
        return f"{kind}: {graph.number_of_nodes()} agents, peers changing per round (union: {degree_text(graph)})"
    return (f"{kind or 'graph'}: {graph.number_of_nodes()} agents, {degree_text(graph)}, "
            f"spectral gap {spectral_gap(graph):.3f}")


def draw_topology(graph: nx.Graph, path: str | Path, kind: str = "", colors: dict[int, int] | None = None,
                  note: str = "") -> Path:
    """`colors`: an optional group per node (e.g. a true cluster), drawn in its own colour; `note` a second line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = graph.number_of_nodes()
    positions = layout(graph, kind)
    shape = grid_shape(graph, kind)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    if shape:  # straight edges between grid neighbours; wrap-around edges as stubs leaving the grid
        rows, cols = shape
        near = [(u, v) for u, v in graph.edges if np.abs(positions[u] - positions[v]).sum() <= 1.01]
        nx.draw_networkx_edges(graph, positions, edgelist=near, ax=ax, edge_color="#666666")
        for u, v in graph.edges:
            if (u, v) in near:
                continue
            delta = positions[v] - positions[u]
            step = -np.sign(delta) * (np.abs(delta) > 1.01) * WRAP_STUB
            for node, direction in ((u, step), (v, -step)):
                start = positions[node]
                ax.plot([start[0], start[0] + direction[0]], [start[1], start[1] + direction[1]], color="#666666",
                        linestyle="--", linewidth=1)
    else:
        nx.draw_networkx_edges(graph, positions, ax=ax, edge_color="#666666", alpha=0.8 if n <= 32 else 0.4)
    palette = plt.get_cmap("tab10")
    node_colors = [palette(colors[u] % 10) if colors else "#4c72b0" for u in graph.nodes]
    size = 380 if n <= 32 else 160 if n <= 64 else 40
    nx.draw_networkx_nodes(graph, positions, ax=ax, node_color=node_colors, node_size=size)
    if n <= 64:
        nx.draw_networkx_labels(graph, positions, ax=ax, font_color="white", font_size=8 if n <= 32 else 6)
    title = topology_title(graph, kind)
    if shape:
        title += f"\n{shape[0]}x{shape[1]} grid; dashed stubs wrap around"
    if note:
        title += f"\n{note}"
    ax.set_title(title, fontsize=10)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
