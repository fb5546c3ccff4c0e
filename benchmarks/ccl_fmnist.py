"""The CCL paper's Fashion-MNIST setting at small scale: DSGDm-N vs QGM vs CCL(+QGM).

LeNet-5, ring of 16 agents, Dirichlet alpha in {0.01, 0.1} (plus an IID ceiling row), batch 32
per agent, the same seeds and data order for every algorithm, on the real Fashion-MNIST files.
The runs are one `p2pfl sweep` of named cells (the command is written above the table), resumable in --runs.

    python benchmarks/ccl_fmnist.py                 # the full table (about 45 minutes on 2 cores)
    python benchmarks/ccl_fmnist.py --quick         # smoke test on digits, seconds
Writes RESULTS/ccl_fmnist.md (mean +- std over seeds of local-model and consensus accuracy) and
RESULTS/ccl_fmnist.png (local-model accuracy per round, mean over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from p2pfl.cli.sweep_cmd import run_sweep
from p2pfl.config import load_config
from p2pfl.overrides import apply_values
from p2pfl.sweep import SMOKE_TEST, benchmark_runs, by_cell, fmt, sweep_command
from p2pfl.sweep_cells import Cell, cells_of

ROOT = Path(__file__).resolve().parents[1]
ALGORITHM_OPTIONS = {"dsgdm-n": {}, "qgm": {"variant": "lin"},
                     "ccl": {"variant": "lin", "lambda_m": 0.1, "lambda_d": 0.1, "gamma": 1.0}}
LABELS = {"dsgdm-n": "DSGDm-N", "qgm": "QGM", "ccl": "CCL (+QGM)"}


def split_label(alpha: float | None) -> str:
    return f"Dirichlet α = {alpha}" if alpha is not None else "IID (ceiling)"


def cells(args: argparse.Namespace) -> list[Cell]:
    """One named cell per (split, algorithm), IID ceiling last; every seed runs each."""
    named = [(f"{split_label(alpha)}, {LABELS[algorithm]}", {"algorithm": algorithm,
              "options": ALGORITHM_OPTIONS[algorithm], "data.partition": "dirichlet", "data.alpha": alpha})
             for alpha in args.alphas for algorithm in args.algorithms]
    if args.iid_algorithm:
        iid = args.iid_algorithm
        named.append((f"{split_label(None)}, {LABELS[iid]}", {"algorithm": iid, "options": ALGORITHM_OPTIONS[iid],
                                                              "data.partition": "iid"}))
    return cells_of([], named)


def write_table(table: list[dict]) -> str:
    """Means over the seeds that stayed finite; a run the divergence guard stopped counts as diverged."""
    lines = ["| split | algorithm | local models' test accuracy (%) | consensus model's test accuracy (%) | seeds "
             "| diverged |", "| --- | --- | --- | --- | --- | --- |"]
    for entry in table:
        split, algorithm = entry["name"].split(", ", 1)
        lines.append(f"| {split} | {algorithm} | {fmt(entry['local_accuracy_mean'], percent=True)} | "
                     f"{fmt(entry['consensus_accuracy'], percent=True)} | {len(entry['seeds'])} | "
                     f"{entry['diverged']} |")
    return "\n".join(lines)


def plot(runs: dict[str, list[dict]], path: Path) -> None:
    """Local-model accuracy per round, mean over seeds, one panel per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(dict.fromkeys(name.split(", ", 1)[0] for name in runs))
    fig, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 4), squeeze=False)
    for ax, split in zip(axes[0], splits):
        for name, summaries in runs.items():
            if name.split(", ", 1)[0] != split:
                continue
            curves = [s["local_accuracy_curve"] for s in summaries  # a diverged run's curve stops early
                      if s["local_accuracy_curve"] and s.get("status") != "diverged"]
            if curves:
                ax.plot([r for r, _ in curves[0]], np.mean([[a for _, a in c] for c in curves], axis=0), marker="o",
                        label=name.split(", ", 1)[1])
        ax.set(title=split, xlabel="round", ylabel="test accuracy (mean of local models)", ylim=(0, 1))
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "examples" / "ccl_fmnist_ring16.yaml"))
    parser.add_argument("--rounds", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHM_OPTIONS))
    parser.add_argument("--iid-algorithm", default="dsgdm-n", help="Algorithm of the IID row ('' for none).")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--runs", help="The sweep's folder (default: RESULTS/runs/ccl_fmnist[_quick]); resumable.")
    parser.add_argument("--processes", action="store_true", help="Run agents as processes (faster on 2 cores).")
    parser.add_argument("--quick", action="store_true", help="Smoke test: 4 agents, MLP, digits, few rounds.")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seeds, args.alphas = min(args.rounds, 8), args.seeds[:1], args.alphas[:1]
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    stem = "ccl_quick" if args.quick else "ccl_fmnist"
    sets = {"rounds": args.rounds, "eval_every": max(1, args.rounds // 4), **(SMOKE_TEST if args.quick else {})}
    base = apply_values(load_config(args.config), sets)
    named = cells(args)
    rows, table, _ = run_sweep(base, named, args.seeds, benchmark_runs(args.runs, out, stem),
                               simulate=not args.processes, in_process=args.quick and not args.processes,
                               run_plots=not args.quick)
    runs = {entry["name"]: by_cell(rows)[entry["cell"]] for entry in table}
    (out / f"{stem}_runs.json").write_text(json.dumps(
        {f"{row['cell']}, seed {row['seed']}": row["summary"] for row in rows}, indent=1))
    command = sweep_command(os.path.relpath(args.config, ROOT), cells=named, sets=sets, seeds=args.seeds,
                            simulate=not args.processes)
    header = (f"LeNet-5, ring of 16, batch 32, {args.rounds} rounds, seeds {args.seeds}. Local = mean over the 16 "
              "agents of each local model's test accuracy; consensus = the exact parameter average's; mean ± sample "
              f"std over the seeds that stayed finite (a run the divergence guard stopped is counted in diverged).\n\nRuns: `{command}`\n\n")
    table_text = write_table(table)
    (out / f"{stem}.md").write_text(header + table_text + "\n")
    plot(runs, out / f"{stem}.png")
    print(table_text)


if __name__ == "__main__":
    main(sys.argv[1:])
