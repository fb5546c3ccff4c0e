"""What the data split gave every agent: samples and classes per agent, the remainder dropped, a PNG.

Written to every gossip run folder as partition.json and partition.png before the agents start.
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


def class_counts(config: RunConfig, dataset: ArrayDataset) -> np.ndarray:
    """agents x classes: how many training samples of each class every agent holds (the split the agents derive)."""
    shards = partition(dataset.y_train, config.agents, config.data.partition, config.data.alpha, config.seed)
    return np.stack([np.bincount(dataset.y_train[idx], minlength=dataset.num_classes) for idx in shards])


def partition_summary(config: RunConfig, dataset: ArrayDataset) -> dict:
    counts = class_counts(config, dataset)
    samples = counts.sum(1)
    classes = (counts > 0).sum(1)
    return {"dataset": dataset.name, "partition": config.data.partition, "alpha": config.data.alpha,
            "agents": config.agents, "training_samples": int(len(dataset.y_train)),
            "samples_used": int(samples.sum()), "samples_dropped": int(len(dataset.y_train) - samples.sum()),
            "test_samples": int(len(dataset.y_test)),
            "per_agent": [{"agent": a, "samples": int(samples[a]), "classes": int(classes[a]),
                           "class_counts": counts[a].tolist()} for a in range(config.agents)]}


def describe(summary: dict) -> str:
    """One line for the terminal."""
    samples = [a["samples"] for a in summary["per_agent"]]
    classes = [a["classes"] for a in summary["per_agent"]]
    size = f"{samples[0]}" if min(samples) == max(samples) else f"{min(samples)}-{max(samples)}"
    kinds = f"{classes[0]}" if min(classes) == max(classes) else f"{min(classes)}-{max(classes)}"
    dropped = summary["samples_dropped"]
    return (f"partition: {summary['agents']} agents x {size} training samples, {kinds} classes each"
            + (f", {dropped} of {summary['training_samples']} samples dropped (equal shards)" if dropped else "")
            + f"; {summary['test_samples']} shared test samples")


def plot_partition(summary: dict, path: Path, title: str) -> None:
    """One stacked bar per agent: its training samples by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.array([a["class_counts"] for a in summary["per_agent"]])
    agents, classes = counts.shape
    colours = plt.get_cmap("tab10" if classes <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(min(14.0, 3 + 0.35 * agents), 4.2))
    bottom = np.zeros(agents)
    for k in range(classes):
        ax.bar(np.arange(agents), counts[:, k], bottom=bottom, color=colours(k % colours.N), width=0.8,
               label=f"class {k}")
        bottom += counts[:, k]
    ax.set_xticks(np.arange(agents), [str(a) for a in range(agents)], fontsize=8 if agents <= 32 else 5)
    ax.set(xlabel="agent", ylabel="training samples", title=title)
    if classes <= 20:
        ax.legend(fontsize=7, ncol=1, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_partition(config: RunConfig, dataset: ArrayDataset, run_dir: Path) -> dict:
    summary = partition_summary(config, dataset)
    (Path(run_dir) / PARTITION_JSON).write_text(json.dumps(summary, indent=2))
    split = f"Dirichlet α={config.data.alpha:g}" if config.data.partition == "dirichlet" else config.data.partition
    plot_partition(summary, Path(run_dir) / PARTITION_PLOT, f"{dataset.name}, {split}: classes per agent "
                                                             f"({summary['samples_dropped']} samples dropped)")
    return summary
