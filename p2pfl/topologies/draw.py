"""PNG drawing of a gossip graph."""

from __future__ import annotations

from pathlib import Path

import networkx as nx


def draw_topology(graph: nx.Graph, path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    layout = nx.circular_layout(graph) if graph.number_of_nodes() <= 64 else nx.spring_layout(graph, seed=0)
    nx.draw_networkx(graph, layout, ax=ax, node_color="#4c72b0", font_color="white", node_size=300, font_size=8)
    ax.set_title(title)
    ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
