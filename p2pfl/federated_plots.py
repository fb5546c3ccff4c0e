"""curves.png of a coordinator-method run: the clients' metric and the clustering's ARI per round."""

from __future__ import annotations

from pathlib import Path

from p2pfl.config import RunConfig


def federated_title(config: RunConfig, summary: dict) -> str:
    o = summary["options"]
    split = f"{o.get('clusters')} {o.get('cluster_kind')} clusters" if "cluster_kind" in o else ""
    return (f"{config.algorithm}, {summary['clients']} clients + coordinator, {config.data.name} {split}, "
            f"{config.model}, seed {config.seed}")


def plot_federated(summary: dict, path: Path, title: str) -> None:
    """Rows as the coordinator logged them (round index r, the last one the final evaluation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from p2pfl.report import fitted_limits

    rounds, values = [r + 1 for r in summary["rounds_logged"]], summary["accuracy_per_round"]  # counted from 1
    aris = [(r, a) for r, a in zip(rounds, summary["ari_per_round"]) if a is not None]
    label = "round (from 1; the last point is the final evaluation)"
    found = [(r, k) for r, k in zip(rounds, summary.get("clusters_found_per_round", [])) if k is not None]
    panels = 1 + bool(aris) + bool(found)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    left = axes[0][0]
    metric = summary["metric"]
    left.plot(rounds, values, marker="o")
    if values and metric == "accuracy":
        left.set_ylim(*fitted_limits(values))
    left.set(xlabel=label, ylabel=f"test {metric}",
             title=f"{metric}: each client, its model, its own test data (mean)")
    left.grid(alpha=0.3)
    if aris:
        right = axes[0][1]
        right.plot([r for r, _ in aris], [a for _, a in aris], marker="s", color="tab:orange")
        right.set(xlabel=label, ylabel="adjusted Rand index",
                  title="clustering vs the true clusters", ylim=(-0.05, 1.05))
        right.grid(alpha=0.3)
    if found:  # CLoVE with unknown_k: the number of clusters it settled on, against the bound it was given
        ax = axes[0][panels - 1]
        ax.step([r for r, _ in found], [k for _, k in found], where="post", marker="o", color="tab:green")
        ax.axhline(summary["options"]["models"], ls="--", color="grey", label="upper bound (options.models)")
        ax.axhline(summary["options"]["clusters"], ls=":", color="black", label="true clusters (options.clusters)")
        ax.set(xlabel=label, ylabel="clusters found", title="clusters found (models in use)",
               ylim=(0, summary["options"]["models"] + 1), xlim=left.get_xlim())
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
