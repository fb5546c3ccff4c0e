"""A grid of runs (cells x seeds), resumable, then mean ± std per cell and one plot.

Layout of a sweep folder:
    OUT/<cell folder>/seed-<s>/   one ordinary run folder per cell and seed (folder: NAME,key=value,...)
    OUT/results.json, results.csv, results.md, sweep.png
A run folder with a summary.json is finished and skipped when the sweep is run again; one without
is a run that was interrupted and is run again from scratch.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from shlex import quote
from typing import Any, Callable

import numpy as np

from p2pfl.agents import rundir
from p2pfl.config import RunConfig
from p2pfl.errors import UserError
from p2pfl.overrides import apply_values
from p2pfl.sweep_cells import Cell, show

CELL_FILE = "sweep_cell.json"
# What a benchmark script's --quick smoke test sets on top of its sweep: 4 agents, an MLP on digits, seconds.
SMOKE_TEST = {"agents": 4, "model": "mlp", "data.name": "digits", "data.path": None, "eval_samples": 0}


@dataclass(frozen=True)
class Metric:
    """A summary key shown per cell; `percent`: a fraction shown x100; `plotted`: drawn in sweep.png."""
    key: str
    label: str
    percent: bool = False
    plotted: bool = False


def default_metrics(rows: list[dict], metric_name: str) -> tuple[Metric, ...]:
    """Gossip methods: local and consensus accuracy; coordinator methods: their final metric, plus the
    final ARI where the method clusters."""
    percent = metric_name == "accuracy"
    summaries = [r["summary"] for r in rows]
    metrics: tuple[Metric, ...] = ()
    if any("local_accuracy_mean" in s for s in summaries):
        metrics += (Metric("local_accuracy_mean", f"local models {metric_name}", percent, True),
                    Metric("consensus_accuracy", f"consensus model {metric_name}", percent, True))
    if any("final_accuracy" in s for s in summaries):
        metrics += (Metric("final_accuracy", f"clients' own models, final {metric_name}", percent, True),)
    if any(s.get("final_ari") is not None for s in summaries):
        metrics += (Metric("final_ari", "final ARI"),)
    return metrics


def metrics_of(rows: list[dict], metric_name: str = "accuracy", extra: tuple[str, ...] = ()) -> tuple[Metric, ...]:
    """The default columns, then each `--metric KEY` (a number in every summary that has it)."""
    metrics = default_metrics(rows, metric_name)
    for key in extra:
        if key in (m.key for m in metrics):
            continue
        present = [r["summary"][key] for r in rows if r["summary"].get(key) is not None]
        if not present:
            numeric = sorted({k for r in rows for k, v in r["summary"].items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)})
            raise UserError(f"--metric {key}: no run's summary has it; numbers there: {', '.join(numeric)}")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in present):
            raise UserError(f"--metric {key}: the summaries hold {type(present[0]).__name__} values, not numbers")
        metrics += (Metric(key, key, percent=False),)
    return metrics


def parse_seeds(text: str | None, default: int) -> list[int]:
    if not text:
        return [default]
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r} must be integers separated by commas, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {text!r} must list distinct integers, e.g. 0,1,2")
    return seeds


def cell_config(base: RunConfig, cell: Cell, seed: int) -> RunConfig:
    try:
        config = apply_values(base, {**cell.values, "seed": seed})
    except UserError as exc:
        raise UserError(f"cell {cell.label!r}: {exc}") from None
    config.run_id = None
    return config


def fingerprint(config: RunConfig) -> str:
    body = {k: v for k, v in config.to_dict().items() if k != "run_id"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def finished(run_dir: Path, config: RunConfig) -> bool:
    """A finished run of this very config; a folder of another config is an error, not silently reused."""
    marker = run_dir / CELL_FILE
    if not marker.exists():
        return False
    if json.loads(marker.read_text())["config"] != fingerprint(config):
        raise UserError(f"{run_dir} holds a run of a different config (the base config or --set changed since); "
                        "give the sweep another --out or delete that folder")
    return (run_dir / rundir.SUMMARY).exists()


def run_grid(base: RunConfig, cells: list[Cell], seeds: list[int], out: Path,
             run_one: Callable[[RunConfig, Path], dict], echo: Callable[[str], None] = print) -> list[dict]:
    """Run every (cell, seed) not finished yet; returns one row per run with the cell, seed and summary.
    A run the divergence guard stopped is finished too (its summary says `status: diverged`)."""
    from p2pfl.validation import validate_config

    configs = {(i, s): cell_config(base, cell, s) for i, cell in enumerate(cells) for s in seeds}
    for (i, _), config in configs.items():  # every cell is checked before the first run starts
        try:
            validate_config(config)
        except UserError as exc:
            raise UserError(f"cell {cells[i].label!r}: {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    rows, total = [], len(configs)
    for number, ((i, seed), config) in enumerate(configs.items(), 1):
        cell = cells[i]
        run_dir = out / cell.folder / f"seed-{seed}"
        if finished(run_dir, config):
            echo(f"[{number}/{total}] {cell.label}, seed {seed}: done before, skipped")
        else:
            if run_dir.exists():
                shutil.rmtree(run_dir)  # an interrupted run: start it again from scratch
            run_dir.mkdir(parents=True)
            (run_dir / CELL_FILE).write_text(json.dumps({"values": cell.values, "seed": seed,
                                                         "config": fingerprint(config)}))
            echo(f"[{number}/{total}] {cell.label}, seed {seed}")
            config.name = f"{base.name} {cell.label}, seed {seed}"
            run_one(config, run_dir)
        summary = json.loads((run_dir / rundir.SUMMARY).read_text())
        rows.append({"cell": cell.label, "name": cell.name, "values": cell.values, "seed": seed,
                     "summary": summary})
    return rows


def sweep_command(config: str | Path, *, cells_file: str | None = None, cells: list[Cell] = (),
                  grid: list[tuple[str, list[Any]]] = (), sets: dict[str, Any] | None = None, seeds: list[int] = (),
                  metrics: tuple[str, ...] = (), simulate: bool = True) -> str:
    """The `p2pfl sweep` command line that runs the same sweep as a benchmark script, for its table's header."""
    parts = ["p2pfl sweep", str(config)] + ([f"--cells {cells_file}"] if cells_file else [])
    parts += [f"--cell {quote(cell.name + ': ' + ', '.join(f'{k}={show(v)}' for k, v in cell.values.items()))}"
              for cell in cells]
    parts += [f"--grid {quote(f'{k}=' + ','.join(map(show, values)))}" for k, values in grid]
    parts += [f"--set {quote(f'{k}={show(v)}')}" for k, v in (sets or {}).items()]
    parts += [f"--seeds {','.join(map(str, seeds))}"] if seeds else []
    parts += [f"--metric {m}" for m in metrics] + (["--simulate"] if simulate else [])
    return " ".join(parts)


def benchmark_runs(runs: str | None, results: str | Path, stem: str) -> Path:
    """A benchmark script's sweep folder: --runs, else RESULTS/runs/STEM (git ignores it), so a smoke test
    writing its results elsewhere never meets the real runs."""
    return Path(runs) if runs else Path(results) / "runs" / stem


def by_cell(rows: list[dict]) -> dict[str, list[dict]]:
    """Each cell's run summaries in seed order, keyed by the cell's label: what a benchmark's table reads."""
    cells: dict[str, list[dict]] = {}
    for row in rows:
        cells.setdefault(row["cell"], []).append(row["summary"])
    return cells


def diverged(row: dict) -> bool:
    return row["summary"].get("status") == "diverged"


def aggregate(rows: list[dict], metrics: tuple[Metric, ...] | None = None) -> list[dict]:
    """Mean and sample standard deviation over seeds of each metric, per cell, in grid order. A diverged
    run counts in `diverged` and is left out of the means (its last figures are of a broken model)."""
    metrics = default_metrics(rows, "accuracy") if metrics is None else metrics
    table: dict[str, dict] = {}
    for row in rows:
        entry = table.setdefault(row["cell"], {"cell": row["cell"], "name": row.get("name"), "values": row["values"],
                                               "seeds": [], "diverged": 0, "samples": {m.key: [] for m in metrics}})
        entry["seeds"].append(row["seed"])
        if diverged(row):
            entry["diverged"] += 1
            continue
        for metric in metrics:
            value = row["summary"].get(metric.key)
            if value is not None:
                entry["samples"][metric.key].append(float(value))
    out = []
    for entry in table.values():
        samples = entry.pop("samples")
        for key, values in samples.items():
            entry[key] = {"mean": float(np.mean(values)) if values else None,
                          "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,  # one run: no spread
                          "n": len(values), "values": values}
        out.append(entry)
    return out


def fmt(stat: dict, percent: bool) -> str:
    """mean ± std; a fraction as percent with 2 decimals, large numbers with thousands separators."""
    if stat["mean"] is None:
        return "n/a"
    scale, digits = (100, 2) if percent else (1, 0 if abs(stat["mean"]) >= 100 else 3)
    mean = f"{scale * stat['mean']:,.{digits}f}"
    return mean if stat["std"] is None else f"{mean} ± {scale * stat['std']:,.{digits}f}"


def column(metric: Metric) -> str:
    return f"{metric.label}{' (%)' if metric.percent else ''}"


def write_results(out: Path, base: RunConfig, rows: list[dict], table: list[dict],
                  metrics: tuple[Metric, ...]) -> None:
    """results.json (every run's summary), results.csv, results.md (a diverged column only when a run
    diverged) and sweep.png."""
    (out / "results.json").write_text(json.dumps({"runs": rows, "cells": table}, indent=2, default=str))
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell", "seeds", "diverged"] + [f"{m.label} {part}" for m in metrics
                                                         for part in ("mean", "std")])
        for entry in table:
            writer.writerow([entry["cell"], len(entry["seeds"]), entry["diverged"]]
                            + [entry[m.key][part] for m in metrics for part in ("mean", "std")])
    (out / "results.md").write_text(markdown_table(table, metrics))
    plotted = tuple(m for m in metrics if m.plotted)
    if plotted:
        plot_sweep(out / "sweep.png", table, plotted, title(base, rows))


def markdown_table(table: list[dict], metrics: tuple[Metric, ...]) -> str:
    any_diverged = any(entry["diverged"] for entry in table)
    head = ["cell", "seeds"] + (["diverged"] if any_diverged else []) + [column(m) for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for entry in table:
        cells = [entry["cell"], str(len(entry["seeds"]))] + ([str(entry["diverged"])] if any_diverged else [])
        lines.append("| " + " | ".join(cells + [fmt(entry[m.key], m.percent) for m in metrics]) + " |")
    return "\n".join(lines) + "\n"


def title(base: RunConfig, rows: list[dict]) -> str:
    seeds = sorted({r["seed"] for r in rows})
    split = f"α={base.data.alpha}" if base.data.partition == "dirichlet" else base.data.partition
    return (f"{base.name}: {base.data.name} {split}, {base.agents} agents, {base.rounds} rounds, "
            f"mean ± std over {len(seeds)} seed{'s' if len(seeds) > 1 else ''}")


def plot_sweep(path: Path, table: list[dict], metrics: tuple[Metric, ...], title_text: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [entry["cell"].replace(", ", "\n") for entry in table]
    offset = 0.25 if len(metrics) > 1 else 0.0
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(table) + 2), 4.5))
    x = np.arange(len(table))
    seen: list[float] = []
    for m, metric in enumerate(metrics):
        key, label = metric.key, metric.label
        at = x + (m - (len(metrics) - 1) / 2) * offset
        means = np.array([np.nan if e[key]["mean"] is None else e[key]["mean"] for e in table])
        stds = np.array([0.0 if e[key]["std"] is None else e[key]["std"] for e in table])
        line = ax.errorbar(at, means, yerr=stds, fmt="o", capsize=5, markersize=7, label=f"{label}, mean ± std")
        for xi, e in zip(at, table):  # every seed's value, small and beside its mean
            ax.scatter([xi + 0.06] * len(e[key]["values"]), e[key]["values"], s=12, color=line[0].get_color(),
                       alpha=0.5)
            seen += e[key]["values"]
        seen += list((means - stds)[~np.isnan(means)]) + list((means + stds)[~np.isnan(means)])
    if seen:  # fitted to the data, so small differences stay visible
        low, high = min(seen), max(seen)
        pad = max(0.01, 0.1 * (high - low))
        ax.set_ylim(low - pad, high + pad)
    ax.set_xlim(-0.6, len(table) - 0.4)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel(f"test {metrics[0].label.rsplit(' ', 1)[-1]}")  # the labels end in the metric
    ax.set_title(title_text, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(table: list[dict], metrics: tuple[Metric, ...], heading: str) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(title=heading)
    out.add_column("cell")
    out.add_column("seeds", justify="right")
    any_diverged = any(entry["diverged"] for entry in table)
    if any_diverged:
        out.add_column("diverged", justify="right")
    for metric in metrics:
        out.add_column(f"{column(metric)}, mean ± std", justify="right")
    for entry in table:
        out.add_row(entry["cell"], str(len(entry["seeds"])), *([str(entry["diverged"])] if any_diverged else []),
                    *(fmt(entry[m.key], m.percent) for m in metrics))
    Console(width=160).print(out)
