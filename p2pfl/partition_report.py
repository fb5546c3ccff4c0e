"""What the data split gave every agent: samples and classes per agent, the remainder dropped, a PNG.

Written to every run folder: partition.json before the agents start, partition.png as they start. For a
coordinator method the rows are its clients (agent 0, the coordinator, holds no data), with the
true cluster (or task) of each.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from p2pfl.config import RunConfig
from p2pfl.data.dataset import ArrayDataset
from p2pfl.data.partition import partition

PARTITION_JSON = "partition.json"
PARTITION_PLOT = "partition.png"


def agent_labels(config: RunConfig, dataset: ArrayDataset) -> dict[int, np.ndarray]:
    """Training labels of every agent that holds data: the same split the agents derive from the config."""
    from p2pfl.registry import ALGORITHMS, METHODS, parse_algorithm_options

    if not ALGORITHMS[config.algorithm].centralized:
        shards = partition(dataset.y_train, config.agents, config.data.partition, config.data.alpha, config.seed)
        return {a: dataset.y_train[idx] for a, idx in enumerate(shards)}
    options = parse_algorithm_options(config.algorithm, config.options)
    local_data = METHODS[config.algorithm].local_data
    return {c: np.asarray(local_data(config, dataset, options, c)[1]) for c in range(1, config.agents)}


def partition_summary(config: RunConfig, dataset: ArrayDataset) -> dict:
    labels = agent_labels(config, dataset)
    integer = all(np.issubdtype(y.dtype, np.integer) and (len(y) == 0 or y.min() >= 0) for y in labels.values())
    classes = max([dataset.num_classes] + [int(y.max()) + 1 for y in labels.values() if len(y)]) if integer else 0
    counts = {a: np.bincount(y, minlength=classes) if integer else np.zeros(0, int) for a, y in labels.items()}
    used = sum(len(y) for y in labels.values())
    groups = true_groups(config)
    return {"dataset": dataset.name, "partition": config.data.partition, "alpha": config.data.alpha,
            "agents": config.agents, "training_samples": int(len(dataset.y_train)),
            "samples_used": int(used), "samples_dropped": max(0, int(len(dataset.y_train) - used)),
            "test_samples": int(len(dataset.y_test)),
            "per_agent": [{"agent": a, "samples": int(len(labels[a])),
                           "classes": int((counts[a] > 0).sum()) if integer else None,
                           "class_counts": counts[a].tolist(), **({"cluster": groups[a]} if groups else {})}
                          for a in sorted(labels)]}


def true_groups(config: RunConfig) -> dict[int, int] | None:
    """Coordinator methods: the true cluster (or task) of every client."""
    from p2pfl.registry import ALGORITHMS, parse_algorithm_options

    if not ALGORITHMS[config.algorithm].centralized:
        return None
    from p2pfl.agents.methods.base import true_cluster_of

    options = parse_algorithm_options(config.algorithm, config.options)
    return {c: true_cluster_of(config, options, c) for c in range(1, config.agents)}


def describe(summary: dict) -> str:
    """One line for the terminal."""
    samples = [a["samples"] for a in summary["per_agent"]]
    classes = [a["classes"] for a in summary["per_agent"] if a["classes"] is not None]
    size = f"{samples[0]}" if min(samples) == max(samples) else f"{min(samples)}-{max(samples)}"
    kinds = "" if not classes else f", {classes[0]} classes each" if min(classes) == max(classes) else \
        f", {min(classes)}-{max(classes)} classes each"
    dropped = summary["samples_dropped"]
    who = "clients" if "cluster" in summary["per_agent"][0] else "agents"
    return (f"partition: {len(samples)} {who} x {size} training samples{kinds}"
            + (f", {dropped} of {summary['training_samples']} training samples given to no one" if dropped else "")
            + ("" if who == "clients" else f"; {summary['test_samples']} shared test samples"))


def plot_partition(summary: dict, path: Path, title: str) -> None:
    """One stacked bar per agent: its training samples by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["per_agent"]
    counts = np.array([a["class_counts"] for a in rows]) if rows[0]["class_counts"] else \
        np.array([[a["samples"]] for a in rows])  # labels that are not classes: one bar of samples each
    agents, classes = counts.shape
    colours = plt.get_cmap("tab10" if classes <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(min(14.0, 3 + 0.35 * agents), 4.2))
    bottom = np.zeros(agents)
    for k in range(classes):
        ax.bar(np.arange(agents), counts[:, k], bottom=bottom, color=colours(k % colours.N), width=0.8,
               label=f"class {k}")
        bottom += counts[:, k]
    ticks = [f"{a['agent']}" + (f"\nc{a['cluster']}" if "cluster" in a else "") for a in rows]
    ax.set_xticks(np.arange(agents), ticks, fontsize=8 if agents <= 32 else 5)
    ax.set(xlabel="agent" + (" (cN: its true cluster)" if "cluster" in rows[0] else ""), ylabel="training samples",
           title=title)
    if classes <= 20 and rows[0]["class_counts"]:
        ax.legend(fontsize=7, ncol=1, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def split_text(config: RunConfig) -> str:
    from p2pfl.registry import ALGORITHMS, parse_algorithm_options

    if ALGORITHMS[config.algorithm].centralized:
        from p2pfl.agents.federated import describe_split

        return describe_split(config.algorithm, parse_algorithm_options(config.algorithm, config.options))
    return f"Dirichlet α={config.data.alpha:g}" if config.data.partition == "dirichlet" else config.data.partition


def write_partition(config: RunConfig, dataset: ArrayDataset, run_dir: Path) -> dict:
    """partition.json; the plot is drawn by draw_partition, once agents are started (matplotlib costs a second)."""
    summary = partition_summary(config, dataset)
    (Path(run_dir) / PARTITION_JSON).write_text(json.dumps(summary, indent=2))
    return summary


def draw_partition(config: RunConfig, summary: dict, dataset_name: str, run_dir: Path) -> None:
    dropped = summary["samples_dropped"]
    plot_partition(summary, Path(run_dir) / PARTITION_PLOT, f"{dataset_name}, {split_text(config)}: classes per agent"
                   + (f"\n({dropped} training samples given to no one)" if dropped else ""))
