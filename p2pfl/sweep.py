"""A grid of runs (config keys x values x seeds), resumable, then mean ± std per cell and one plot.

Layout of a sweep folder:
    OUT/<key=value,key=value>/seed-<s>/   one ordinary run folder per cell and seed
    OUT/results.json, results.csv, results.md, sweep.png
A run folder with a summary.json is finished and skipped when the sweep is run again; one without
is a run that was interrupted and is run again from scratch.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from p2pfl.agents import rundir
from p2pfl.config import RunConfig
from p2pfl.errors import UserError
from p2pfl.overrides import FLOAT, apply_values, split_assignment

CELL_FILE = "sweep_cell.json"
# (summary key, column label); a coordinator method reports its final metric instead of the gossip pair.
GOSSIP_METRICS = (("local_accuracy_mean", "local models"), ("consensus_accuracy", "consensus model"))
CENTRAL_METRICS = (("final_accuracy", "clients' own models, final"),)


@dataclass
class Cell:
    values: dict[str, Any]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={show(v)}" for k, v in self.values.items()) or "base config"

    @property
    def folder(self) -> str:
        text = ",".join(f"{k}={show(v)}" for k, v in self.values.items()) or "base"
        return re.sub(r"[^\w.,=+-]", "_", text)


def show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value).lower() if isinstance(value, bool) \
        else str(value)


def parse_grid(items: list[str]) -> list[tuple[str, list[Any]]]:
    """`key=v1,v2,...` each; the values are read as a YAML flow list, so `hidden=[64],[128,64]` works."""
    grid = []
    for item in items:
        key, text = split_assignment(item, "--grid")
        try:
            values = yaml.safe_load(f"[{text}]")
        except yaml.YAMLError:
            raise UserError(f"--grid {item}: cannot read the values; write key=v1,v2 (quote values with commas)") \
                from None
        values = [float(v) if isinstance(v, str) and FLOAT.match(v) else v for v in values]
        if not values:
            raise UserError(f"--grid {item} lists no values; write key=v1,v2")
        if key in (k for k, _ in grid):
            raise UserError(f"--grid names {key} twice; give all its values in one --grid {key}=v1,v2")
        grid.append((key, values))
    return grid


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


def cells_of(grid: list[tuple[str, list[Any]]]) -> list[Cell]:
    keys = [k for k, _ in grid]
    return [Cell(dict(zip(keys, combo))) for combo in itertools.product(*(v for _, v in grid))]


def cell_config(base: RunConfig, cell: Cell, seed: int) -> RunConfig:
    config = apply_values(base, {**cell.values, "seed": seed})
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


def run_grid(base: RunConfig, grid: list[tuple[str, list[Any]]], seeds: list[int], out: Path,
             run_one: Callable[[RunConfig, Path], dict], echo: Callable[[str], None] = print) -> list[dict]:
    """Run every (cell, seed) not finished yet; returns one row per run with the cell, seed and summary."""
    cells = cells_of(grid)
    configs = {(i, s): cell_config(base, cell, s) for i, cell in enumerate(cells) for s in seeds}
    from p2pfl.validation import validate_config

    for config in configs.values():  # every cell is checked before the first run starts
        validate_config(config)
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
        rows.append({"cell": cell.label, "values": cell.values, "seed": seed, "summary": summary})
    return rows


def metrics_of(rows: list[dict]) -> tuple[tuple[str, str], ...]:
    central = any("final_accuracy" in r["summary"] for r in rows)
    gossip = any("local_accuracy_mean" in r["summary"] for r in rows)
    return (GOSSIP_METRICS if gossip else ()) + (CENTRAL_METRICS if central else ())


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and sample standard deviation over seeds of each metric, per cell, in grid order."""
    table: dict[str, dict] = {}
    for row in rows:
        entry = table.setdefault(row["cell"], {"cell": row["cell"], "values": row["values"], "seeds": []})
        entry["seeds"].append(row["seed"])
        for key, _ in metrics_of(rows):
            value = row["summary"].get(key)
            if value is not None:
                entry.setdefault(key, []).append(float(value))
    out = []
    for entry in table.values():
        result = {"cell": entry["cell"], "values": entry["values"], "seeds": entry["seeds"]}
        for key, _ in metrics_of(rows):
            values = entry.get(key, [])
            result[key] = {"mean": float(np.mean(values)) if values else None,
                           "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0 if values else None,
                           "n": len(values), "values": values}
        out.append(result)
    return out


def fmt(stat: dict, percent: bool) -> str:
    if stat["mean"] is None:
        return "n/a"
    scale = 100 if percent else 1
    return f"{scale * stat['mean']:.2f} ± {scale * stat['std']:.2f}"


def write_results(out: Path, base: RunConfig, rows: list[dict], table: list[dict], metric_name: str) -> None:
    metrics = metrics_of(rows)
    percent = metric_name == "accuracy"
    (out / "results.json").write_text(json.dumps({"runs": rows, "cells": table}, indent=2, default=str))
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell", "seeds"] + [f"{label} {part}" for _, label in metrics for part in ("mean", "std")])
        for entry in table:
            writer.writerow([entry["cell"], len(entry["seeds"])] + [entry[k][part] for k, _ in metrics
                                                                   for part in ("mean", "std")])
    unit = " (%)" if percent else ""
    lines = ["| cell | seeds | " + " | ".join(f"{label} {metric_name}{unit}" for _, label in metrics) + " |",
             "| --- | --- | " + " | ".join("---" for _ in metrics) + " |"]
    for entry in table:
        lines.append(f"| {entry['cell']} | {len(entry['seeds'])} | "
                     + " | ".join(fmt(entry[k], percent) for k, _ in metrics) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot_sweep(out / "sweep.png", table, metrics, title(base, rows), metric_name)


def title(base: RunConfig, rows: list[dict]) -> str:
    seeds = sorted({r["seed"] for r in rows})
    split = f"α={base.data.alpha}" if base.data.partition == "dirichlet" else base.data.partition
    return (f"{base.name}: {base.data.name} {split}, {base.agents} agents, {base.rounds} rounds, "
            f"mean ± std over {len(seeds)} seed{'s' if len(seeds) > 1 else ''}")


def plot_sweep(path: Path, table: list[dict], metrics: tuple, title_text: str, metric_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [entry["cell"].replace(", ", "\n") for entry in table]
    offset = 0.25 if len(metrics) > 1 else 0.0
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(table) + 2), 4.5))
    x = np.arange(len(table))
    seen: list[float] = []
    for m, (key, label) in enumerate(metrics):
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
    ax.set_ylabel(f"test {metric_name}")
    ax.set_title(title_text, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(table: list[dict], rows: list[dict], metric_name: str, heading: str) -> None:
    from rich.console import Console
    from rich.table import Table

    percent = metric_name == "accuracy"
    out = Table(title=heading)
    out.add_column("cell")
    out.add_column("seeds", justify="right")
    for _, label in metrics_of(rows):
        out.add_column(f"{label} {metric_name}{' (%)' if percent else ''}, mean ± std", justify="right")
    for entry in table:
        out.add_row(entry["cell"], str(len(entry["seeds"])), *(fmt(entry[k], percent) for k, _ in metrics_of(rows)))
    Console(width=140).print(out)
