"""QGM and CCL at the CCL authors' own setting, seed for seed beside their code.

examples/ccl_reference.yaml is their Fashion-MNIST line (LeNet-5, ring of 16, lr 0.1, 4 epochs)
with every pipeline option set to theirs (split, normalisation, batch order, last batch, hook
order). Each cell runs 16 agent processes; a diverged run is stopped by the guard and counted. The runs
are one `p2pfl sweep` of named cells (without --simulate), resumable in --runs.
The authors' figures come from their own code, run on this machine in a scratch folder (see the
README): one JSON line per run in --authors; they are read, never produced, here.

    python benchmarks/ccl_reference.py                  # 50 runs, about 45 minutes on 2 cores; resumable
    python benchmarks/ccl_reference.py --quick          # smoke test on digits, seconds
Writes RESULTS/ccl_reference.md (per cell: mean ± std over the seeds that stayed finite, the
standard error, the divergence count, beside the authors') and RESULTS/ccl_reference_runs.json.
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
from p2pfl.sweep import SMOKE_TEST, benchmark_runs, sweep_command
from p2pfl.sweep_cells import Cell, cells_of

ROOT = Path(__file__).resolve().parents[1]
QGM = {"variant": "ccl", "mix_first": True}
CCL = {"variant": "ccl", "lambda_m": 0.1, "lambda_d": 0.1, "gamma": 1.0}
# name -> (algorithm, options, config changes by dotted path); the authors' DSGDm-N, QGM and CCL are
# their trainer with --qgm 0/1 and the lambdas 0 or 0.1, so every p2pfl cell keeps their
# gossip-then-step order. The qgm-* cells put back one of p2pfl's own defaults each (--algorithms).
ALGORITHMS: dict[str, tuple[str, dict, dict]] = {
    "dsgdm-n": ("dsgdm-n", {"mix_first": True}, {}),
    "qgm": ("qgm", QGM, {}),
    "ccl": ("ccl", CCL, {}),
    "ccl-clip": ("ccl", {**CCL, "align_clip": 1.0}, {}),
    "ccl-clip2": ("ccl", {**CCL, "align_clip": 2.0}, {}),
    "ccl-warmup": ("ccl", CCL, {"optim.warmup_rounds": 118}),
    "ccl-gradclip": ("ccl", CCL, {"optim.grad_clip": 10.0}),
    "qgm-zscore": ("qgm", QGM, {"data.normalize": "zscore"}),
    "qgm-dirichlet": ("qgm", QGM, {"data.partition": "dirichlet"}),
    "qgm-drop-last": ("qgm", QGM, {"data.drop_last": True}),
    "qgm-own-order": ("qgm", QGM, {"data.order": "agent"}),
    "qgm-step-first": ("qgm", {**QGM, "mix_first": False}, {}),
}
LABELS = {"dsgdm-n": "DSGDm-N", "qgm": "QGM", "ccl": "CCL", "ccl-clip": "CCL, align_clip 1", "ccl-clip2": "CCL, align_clip 2",
          "ccl-warmup": "CCL, 1-epoch warm-up", "ccl-gradclip": "CCL, grad_clip 10", "qgm-zscore": "QGM, z-score inputs",
          "qgm-dirichlet": "QGM, p2pfl's capped Dirichlet split", "qgm-drop-last": "QGM, last partial batch dropped",
          "qgm-own-order": "QGM, p2pfl's per-agent batch order", "qgm-step-first": "QGM, step then gossip"}
AUTHORS_NAMES = {"dsgdm-n": "dsgdm", "qgm": "qgm", "ccl": "ccl"}


def key(alpha: float, algorithm: str, seed: int) -> str:
    return f"{alpha}-{algorithm}-{seed}"


KEPT = ("status", "diverged", "local_accuracy_mean", "consensus_accuracy", "local_accuracy_curve", "seconds_per_round")


def sweep(args: argparse.Namespace, runs: Path) -> tuple[dict[str, dict], str]:
    """Each algorithm a named cell times --grid data.alpha, over the seeds, as processes; returns each run's
    summary by key(alpha, name, seed) and the sweep's command line."""
    sets = {"eval_every": args.eval_every}  # evaluation touches no RNG: the trajectory stays the same without it
    if args.base_port:
        sets["network.base_port"] = args.base_port
    if args.quick:
        sets.update({**SMOKE_TEST, "rounds": 12, "eval_every": 6})
    base = apply_values(load_config(args.config), sets)
    # a whole algorithm row before the next, so a cut-short sweep still fills rows
    named = [(name, {"algorithm": ALGORITHMS[name][0], "options": ALGORITHMS[name][1], **ALGORITHMS[name][2]})
             for name in args.algorithms]
    grid = [("data.alpha", list(args.alphas))]
    cells = cells_of(grid, named)
    rows, _, _ = run_sweep(base, cells, args.seeds, runs, simulate=False, run_plots=not args.quick)
    ours = {key(row["values"]["data.alpha"], row["name"], row["seed"]): {k: row["summary"][k] for k in KEPT}
            for row in rows}
    return ours, sweep_command(os.path.relpath(args.config, ROOT), cells=[Cell(v, n) for n, v in named], grid=grid,
                               sets=sets, seeds=args.seeds, simulate=False)


def read_authors(path: Path) -> dict[str, dict]:
    """Their runs by key; a run whose loss went NaN counts as diverged (their code reports 10.00%)."""
    runs: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                name = {v: k for k, v in AUTHORS_NAMES.items()}[r["alg"]]
                runs[key(r["alpha"], name, r["seed"])] = r
    return runs


def cell_stats(values: list[float | None]) -> tuple[str, list[float]]:
    finite = [v for v in values if v is not None]
    if not finite:
        return "–", finite
    mean, std = np.mean(finite), np.std(finite, ddof=1) if len(finite) > 1 else 0.0
    se = std / np.sqrt(len(finite))
    return f"{mean:.2f} ± {std:.2f} (se {se:.2f})", finite


def write_table(args: argparse.Namespace, ours: dict[str, dict], theirs: dict[str, dict]) -> str:
    lines = ["| α | algorithm | p2pfl local (%) | authors local (%) | p2pfl consensus (%) | authors consensus (%) | "
             "diverged p2pfl / authors | seeds p2pfl / authors |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for alpha in args.alphas:
        for name in args.algorithms:
            mine = [ours[k] for k in (key(alpha, name, s) for s in args.seeds) if k in ours]
            them = [theirs[k] for k in (key(alpha, name, s) for s in args.seeds) if k in theirs]
            ok = [r for r in mine if r["status"] == "finished"]
            their_ok = [r for r in them if not r.get("diverged")]
            ours_local, _ = cell_stats([100 * r["local_accuracy_mean"] for r in ok])
            ours_cons, _ = cell_stats([100 * r["consensus_accuracy"] for r in ok])
            their_local, _ = cell_stats([r["local"] for r in their_ok])
            their_cons, _ = cell_stats([r["consensus"] for r in their_ok])
            lines.append(f"| {alpha} | {LABELS[name]} | {ours_local} | {their_local if them else 'not run'} | "
                         f"{ours_cons} | {their_cons if them else 'not run'} | "
                         f"{len(mine) - len(ok)} / {len(them) - len(their_ok) if them else '–'} | "
                         f"{len(mine)} / {len(them)} |")
    return "\n".join(lines)


def write_seeds(args: argparse.Namespace, ours: dict[str, dict], theirs: dict[str, dict]) -> str:
    """Seed by seed, local / consensus, 'div@r' where the guard stopped a run."""
    def show(r: dict | None, mine: bool) -> str:
        if r is None:
            return ""
        if mine and r["status"] != "finished":
            return "diverged" + (f" (round {r['diverged'].split('at round ')[1].split(':')[0]})" if r["diverged"]
                                 else "")
        if not mine and r.get("diverged"):
            return "NaN (diverged)"
        local, cons = (100 * r["local_accuracy_mean"], 100 * r["consensus_accuracy"]) if mine else \
            (r["local"], r["consensus"])
        return f"{local:.2f} / {cons:.2f}"

    lines = ["| α | algorithm | code | " + " | ".join(f"seed {s}" for s in args.seeds) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in args.seeds) + " |"]
    for alpha in args.alphas:
        for name in args.algorithms:
            for label, runs, mine in (("p2pfl", ours, True), ("authors", theirs, False)):
                if not mine and name not in AUTHORS_NAMES:
                    continue
                cells = [show(runs.get(key(alpha, name, s)), mine) for s in args.seeds]
                lines.append(f"| {alpha} | {LABELS[name]} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "examples" / "ccl_reference.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[123, 124, 125, 126, 127])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--algorithms", nargs="+", default=["qgm", "ccl", "ccl-clip2", "ccl-clip", "dsgdm-n"],
                        choices=list(ALGORITHMS))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--authors", default=str(ROOT / "benchmarks" / "results" / "ccl_reference_authors.jsonl"),
                        help="The authors' code's runs on this machine, one JSON line each.")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="Intermediate evaluations every N rounds (0: only the final one; 118 = each epoch).")
    parser.add_argument("--base-port", type=int, default=0, help="Ports of the agents (default: the config's).")
    parser.add_argument("--runs", help="The sweep's folder (default: RESULTS/runs/ccl_reference[_quick]); resumable.")
    parser.add_argument("--report-only", action="store_true",
                        help="Write the tables from RESULTS/ccl_reference_runs.json, running nothing.")
    parser.add_argument("--quick", action="store_true", help="Smoke test: 4 agents, MLP, digits, 12 rounds.")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.alphas, args.algorithms = args.seeds[:1], args.alphas[:1], ["qgm", "ccl-clip"]
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    stem = "ccl_reference_quick" if args.quick else "ccl_reference"
    raw_path = out / f"{stem}_runs.json"
    if args.report_only:  # the recorded runs of this stem, as the last sweep wrote them
        ours, command = json.loads(raw_path.read_text()) if raw_path.exists() else {}, ""
    else:
        ours, command = sweep(args, benchmark_runs(args.runs, out, stem))
        raw_path.write_text(json.dumps(ours, indent=1))
    theirs = {} if args.quick else read_authors(Path(args.authors))
    table, seeds = write_table(args, ours, theirs), write_seeds(args, ours, theirs)
    header = (f"LeNet-5, ring of 16, Fashion-MNIST, the CCL authors' setting ({os.path.relpath(args.config, ROOT)}), "
              f"seeds {args.seeds}. "
              "Local = mean over the 16 agents of each local model's test accuracy; consensus = the exact parameter "
              "average's. Means and sample std over the seeds that stayed finite; se = std / sqrt(n).\n\n"
              + (f"Runs: `{command}`\n\n" if command else ""))
    (out / f"{stem}.md").write_text(header + table + "\n\nSeed by seed (local / consensus):\n\n" + seeds + "\n")
    print(table)
    print()
    print(seeds)


if __name__ == "__main__":
    main(sys.argv[1:])
