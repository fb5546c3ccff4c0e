"""Accuracy against bytes per round: CHOCO-SGD's compressors beside uncompressed DSGDm-N.

Fashion-MNIST, LeNet-5, ring of 16, Dirichlet alpha = 0.1, batch 32, Nesterov momentum 0.9 on
the local step for every method (the setting of examples/qgm_fmnist_ring16.yaml, alpha 0.1). The
bytes are what the exchange counted on the wire (headers included), per agent per round. The runs
are one `p2pfl sweep` (the rows are benchmarks/choco_cells.yaml), resumable in its --runs folder;
this script adds the "vs DSGDm-N" column and the accuracy-against-bytes plot.

    flock /tmp/p2pfl-cpu.lock python benchmarks/choco.py            # the table (about 10 minutes on 2 cores when idle)
    python benchmarks/choco.py --quick                              # smoke test on digits, seconds
Writes RESULTS/choco.md, RESULTS/choco.png and RESULTS/choco_runs.json (every run's summary).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from p2pfl.cli.sweep_cmd import run_sweep
from p2pfl.config import load_config
from p2pfl.overrides import apply_values
from p2pfl.sweep import SMOKE_TEST, benchmark_runs, by_cell, sweep_command
from p2pfl.sweep_cells import cells_of, read_cells_file

ROOT = Path(__file__).resolve().parents[1]
CELLS = ROOT / "benchmarks" / "choco_cells.yaml"
BYTES = "bytes_sent_per_agent_per_round"


def percent(summary: dict, key: str) -> str:
    return "diverged" if summary["status"] == "diverged" else f"{100 * summary[key]:.2f}"


def write_table(results: dict[str, dict], options: dict[str, dict]) -> str:
    dense = results.get("DSGDm-N (uncompressed)", {}).get(BYTES)
    lines = ["| method | options | bytes sent per agent per round | vs DSGDm-N | local models' test accuracy (%) "
             "| consensus model's test accuracy (%) |", "| --- | --- | --- | --- | --- | --- |"]
    for label, summary in results.items():
        sent = summary[BYTES]
        shown = ", ".join(f"{k} {v}" for k, v in options[label].items()) or "-"
        factor = f"1/{dense / sent:.1f}" if dense else "-"
        lines.append(f"| {label} | {shown} | {sent:,.0f} | {factor} | {percent(summary, 'local_accuracy_mean')} | "
                     f"{percent(summary, 'consensus_accuracy')} |")
    return "\n".join(lines)


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, summary in results.items():
        if summary["status"] == "diverged":
            continue
        ax.scatter(summary[BYTES], summary["local_accuracy_mean"], label=label)
    ax.set(xscale="log", xlabel="bytes sent per agent per round (log)", ylabel="test accuracy (mean of local models)",
           ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "examples" / "qgm_fmnist_ring16.yaml"))
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--runs", help="The sweep's folder (default: RESULTS/runs/choco[_quick]); resumable.")
    parser.add_argument("--quick", action="store_true", help="Smoke test: 4 agents, MLP, digits, few rounds.")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = min(args.rounds, 8)
    stem = "choco_quick" if args.quick else "choco"
    sets = {"data.partition": "dirichlet", "data.alpha": args.alpha, "rounds": args.rounds,
            "eval_every": max(1, args.rounds // 4), **(SMOKE_TEST if args.quick else {})}
    base = apply_values(load_config(args.config), sets)
    named = read_cells_file(CELLS)
    rows, _, _ = run_sweep(base, cells_of([], named), [args.seed], benchmark_runs(args.runs, args.results, stem),
                           simulate=True, in_process=args.quick, metrics=(BYTES,), run_plots=not args.quick)
    paths = ("run_dir", "consensus_model")  # this machine's folders: the run folders stay in --runs
    results = {label: {k: v for k, v in runs[0].items() if k not in paths} for label, runs in by_cell(rows).items()}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}_runs.json").write_text(json.dumps(results, indent=1))
    table = write_table(results, {name: values["options"] for name, values in named})
    header = (f"LeNet-5 on Fashion-MNIST, ring of 16, Dirichlet α = {args.alpha}, batch 32, Nesterov momentum 0.9, "
              f"lr 0.05 with step decay, {args.rounds} rounds, seed {args.seed}, --simulate. Bytes: what the "
              "exchange counted on the wire (headers included). Local = mean over the agents of each local "
              "model's test accuracy; consensus = the exact parameter average's.\n\n")
    if args.quick:
        header = f"Quick smoke run: 4 agents, MLP, digits, {args.rounds} rounds.\n\n"
    command = sweep_command(os.path.relpath(args.config, ROOT), cells_file=os.path.relpath(CELLS, ROOT), sets=sets,
                            seeds=[args.seed], metrics=(BYTES,))
    (out / f"{stem}.md").write_text(header + f"Runs: `{command}`\n\n" + table + "\n")
    plot(results, out / f"{stem}.png")
    print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
