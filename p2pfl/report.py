"""End-of-run outputs: summary.json, the final table and the PNG curves, from the run folder alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from p2pfl.agents import rundir
from p2pfl.models.initial import initial_model
from p2pfl.models.evaluation import evaluate
from p2pfl.algorithms.base import set_flat_params
from p2pfl.config import RunConfig
from p2pfl.data.dataset import ArrayDataset
from p2pfl.errors import UserError
from p2pfl.export import export_models


def read_metrics(run_dir: Path, agents: int) -> list[list[dict]]:
    """Every agent's rows (an agent that died early has fewer); no metrics at all is an error."""
    out = []
    for agent in range(agents):
        path = rundir.metrics_path(run_dir, agent)
        out.append([json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists()
                   else [])
    if not any(out):
        raise UserError(f"no agent metrics under {run_dir}; collect the agents' folders (agents/NNN) into it")
    return out


def consensus_curve(config: RunConfig, dataset: ArrayDataset, run_dir: Path) -> list[tuple[int, float, float]]:
    """(round, accuracy, loss) of the exact parameter average of the agents' models at each saved round."""
    saved = {a: set(rundir.saved_rounds(run_dir, a)) for a in range(config.agents)}
    rounds = sorted(set.union(*saved.values()))
    model = initial_model(config, dataset)
    x_test, y_test = torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test)
    curve = []
    for round_ in rounds:  # over the agents that reached the round (all of them unless some died)
        holders = [a for a in range(config.agents) if round_ in saved[a]]
        average = np.mean([np.load(rundir.params_path(run_dir, a, round_)) for a in holders], axis=0)
        set_flat_params(model, torch.from_numpy(average))
        curve.append((round_, *evaluate(model, x_test, y_test)))
    return curve


def summarize(config: RunConfig, dataset: ArrayDataset, run_dir: Path, mode: str, plot: bool = True) -> dict:
    metrics = read_metrics(run_dir, config.agents)
    rows = [r for agent_rows in metrics for r in agent_rows]
    finished = [a for a, rows in enumerate(metrics) if rows and rows[-1]["round"] == config.rounds - 1]
    finals = [next((r for r in reversed(metrics[a]) if "test_accuracy" in r), {}) for a in finished]
    local = [r["test_accuracy"] for r in finals if r]
    curve = consensus_curve(config, dataset, run_dir)
    consensus = curve[-1][1:] if curve and curve[-1][0] == config.rounds - 1 else None
    diverged = sorted((r["round"], r["diverged"]) for r in rows if "diverged" in r)
    status = "diverged" if diverged else "finished" if len(finished) == config.agents else "incomplete"
    summary = {
        "name": config.name, "mode": mode, "status": status, "diverged": diverged[0][1] if diverged else None, "algorithm": config.algorithm, "agents": config.agents,
        "topology": config.topology.kind, "rounds": config.rounds, "dataset": config.data.name,
        "alpha": config.data.alpha, "partition": config.data.partition, "seed": config.seed,
        "local_accuracy_mean": float(np.mean(local)) if local else None,
        "local_accuracy_std": float(np.std(local)) if local else None,
        "consensus_accuracy": consensus[0] if consensus else None,
        "consensus_loss": consensus[1] if consensus else None,
        "agents_finished": len(finished),
        "agents_not_finished": [a for a in range(config.agents) if a not in finished],
        "final_train_loss_mean": float(np.mean([metrics[a][-1]["loss"] for a in finished])) if finished else None,
        "bytes_sent_per_agent_per_round": float(np.mean([r["bytes_sent"] for r in rows])),
        "bytes_sent_by_tag_per_agent_per_round": per_row_mean(rows, "bytes_by_tag"),
        "bytes_sent_by_tensor_per_agent_per_round": per_row_mean(rows, "bytes_by_tensor"),
        "local_accuracy_curve": [[r, a] for r, a in zip(*mean_curve(metrics, "test_accuracy"))],
        "consensus_accuracy_curve": [[r, a] for r, a, _ in curve],
        "consensus_loss_curve": [[r, loss] for r, _, loss in curve],
        "seconds_per_round": float(np.mean([np.mean([r["seconds"] for r in a]) for a in metrics if a])),
        "compute_seconds_per_round": float(np.mean([r["compute_seconds"] for r in rows])),
        "wait_seconds_per_round": float(np.mean([r["wait_seconds"] for r in rows])),
        "messages_dropped": int(sum(r["dropped"] for r in rows)),
        "run_dir": str(run_dir),
    }
    consensus_model = export_models(config, dataset, Path(run_dir))  # state_dicts: each agent's and the average
    summary["consensus_model"] = str(consensus_model) if consensus_model else None
    (Path(run_dir) / rundir.SUMMARY).write_text(json.dumps(summary, indent=2))
    if plot:
        plot_curves(metrics, curve, Path(run_dir) / rundir.PLOT, run_title(config))
    return summary


def per_row_mean(rows: list[dict], key: str) -> dict[str, float]:
    """Mean per row (agent-round) of each entry of a per-round dict, e.g. bytes by message kind."""
    totals: dict[str, float] = {}
    for r in rows:
        for name, value in r.get(key, {}).items():
            totals[name] = totals.get(name, 0) + value / len(rows)
    return totals


def mean_curve(metrics: list[list[dict]], key: str) -> tuple[list[int], list[float]]:
    rounds, mean, _, _ = spread_curve(metrics, key)
    return rounds, mean


def spread_curve(metrics: list[list[dict]], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Per round (0-based row index): mean, min and max over the agents that reported `key`."""
    by_round: dict[int, list[float]] = {}
    for rows in metrics:
        for r in rows:
            if key in r:
                by_round.setdefault(r["round"], []).append(r[key])
    rounds = sorted(by_round)
    return (rounds, [float(np.mean(by_round[r])) for r in rounds], [float(np.min(by_round[r])) for r in rounds],
            [float(np.max(by_round[r])) for r in rounds])


def run_title(config: RunConfig) -> str:
    """Data set, split, algorithm and topology: what a reader of the figure needs to know."""
    split = f"Dirichlet α={config.data.alpha:g}" if config.data.partition == "dirichlet" else config.data.partition
    return (f"{config.algorithm} on {config.topology.kind} ({config.agents} agents), {config.data.name} {split}, "
            f"{config.model}, seed {config.seed}")


def fitted_limits(values: list[float], low: float = 0.0, high: float = 1.0) -> tuple[float, float]:
    """An axis range around the data (with a margin), inside [low, high]: small differences stay visible."""
    lo, hi = min(values), max(values)
    pad = max(0.01, 0.08 * (hi - lo))
    return max(low, lo - pad), min(high, hi + pad)


def smooth(values: list[float], window: int) -> np.ndarray:
    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_curves(metrics: list[list[dict]], consensus: list, path: Path, title: str) -> None:
    """Loss and test accuracy per round (rounds counted from 1), the mean over agents with a min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    rounds, loss, low, high = spread_curve(metrics, "loss")
    if rounds:
        window = max(1, len(loss) // 50)
        x = [r + 1 for r in rounds][window - 1:]
        left.fill_between(x, smooth(low, window), smooth(high, window), alpha=0.25, label="min-max over agents")
        left.plot(x, smooth(loss, window), label="mean over agents")
        left.legend(fontsize=8)
    left.set(xlabel="round", ylabel="training loss" + (f" (moving average of {window})" if rounds and window > 1
                                                        else ""), title="training loss")
    rounds, acc, low, high = spread_curve(metrics, "test_accuracy")
    x = [r + 1 for r in rounds]
    seen = list(low) + list(high)
    if rounds:
        right.fill_between(x, low, high, alpha=0.25, label="local models, min-max")
        right.plot(x, acc, marker="o", label="local models, mean")
    if consensus:
        right.plot([c[0] + 1 for c in consensus], [c[1] for c in consensus], marker="s", label="consensus model")
        seen += [c[1] for c in consensus]
    if seen:
        right.set_ylim(*fitted_limits(seen))
    right.set(xlabel="round", ylabel="test accuracy", title="test accuracy")
    right.grid(alpha=0.3)
    left.grid(alpha=0.3)
    if right.get_legend_handles_labels()[0]:  # a run that diverged before its first evaluation has none
        right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    table = Table(title=f"{summary['name']} ({summary['mode']}): {summary['algorithm']} on {summary['topology']}, "
                        f"{summary['agents']} agents, {summary['rounds']} rounds")
    table.add_column("metric")
    table.add_column("value", justify="right")
    status = summary.get("status", "finished")
    table.add_row("status", status if not summary.get("diverged") else f"{status}: {summary['diverged']}",
                  style="bold red" if status == "diverged" else None)
    table.add_row("mean test accuracy of the local models", pct(summary["local_accuracy_mean"]))
    table.add_row("test accuracy of the consensus model (parameter average)", pct(summary["consensus_accuracy"]))
    if summary["agents_not_finished"]:
        table.add_row("agents that did not finish (results are over the others)",
                      ", ".join(map(str, summary["agents_not_finished"])))
    loss = summary["final_train_loss_mean"]
    table.add_row("final training loss (mean over agents)", "n/a" if loss is None else f"{loss:.4f}")
    table.add_row("bytes sent per agent per round", f"{summary['bytes_sent_per_agent_per_round']:,.0f}")
    table.add_row("seconds per round", f"{summary['seconds_per_round']:.4f}")
    table.add_row("messages dropped", str(summary["messages_dropped"]))
    if summary.get("consensus_model"):
        table.add_row("final models (PyTorch state_dict)", "consensus_model.pt, agents/NNN/model.pt")
    table.add_row("run folder", summary["run_dir"])
    Console(width=120).print(table)
