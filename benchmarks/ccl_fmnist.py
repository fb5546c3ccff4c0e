"""The CCL paper's Fashion-MNIST setting at small scale: DSGDm-N vs QGM vs CCL(+QGM).

LeNet-5, ring of 16 agents, Dirichlet alpha in {0.01, 0.1} (plus an IID ceiling row), batch 32
per agent, the same seeds and data order for every algorithm, on the real Fashion-MNIST files.
Each finished run's summary is kept in the results folder, so an interrupted benchmark resumes.

    python benchmarks/ccl_fmnist.py                 # the full table (about 45 minutes on 2 cores)
    python benchmarks/ccl_fmnist.py --quick         # smoke test on digits, seconds
Writes RESULTS/ccl_fmnist.md (mean +- std over seeds of local-model and consensus accuracy) and
RESULTS/ccl_fmnist.png (local-model accuracy per round, mean over seeds).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from p2pfl.agents.setup import prepare
from p2pfl.agents.simulate import run_simulation
from p2pfl.config import load_config, save_config
from p2pfl.report import summarize

ROOT = Path(__file__).resolve().parents[1]
ALGORITHM_OPTIONS = {"dsgdm-n": {}, "qgm": {"variant": "lin"},
                     "ccl": {"variant": "lin", "lambda_m": 0.1, "lambda_d": 0.1, "gamma": 1.0}}
LABELS = {"dsgdm-n": "DSGDm-N", "qgm": "QGM", "ccl": "CCL (+QGM)"}


def cells(args: argparse.Namespace) -> list[tuple[str, float | None, str, int]]:
    """(partition, alpha, algorithm, seed) for every run, IID ceiling last."""
    grid = [("dirichlet", alpha, algorithm, seed) for alpha in args.alphas for seed in args.seeds
            for algorithm in args.algorithms]
    return grid + [("iid", None, args.iid_algorithm, seed) for seed in args.seeds if args.iid_algorithm]


def run_one(args: argparse.Namespace, partition: str, alpha: float | None, algorithm: str, seed: int) -> dict:
    config = load_config(args.config)
    config.name = f"{algorithm}-{partition}-{alpha}-s{seed}"
    config.algorithm, config.options, config.seed = algorithm, dict(ALGORITHM_OPTIONS[algorithm]), seed
    config.data.partition = partition
    config.data.alpha = alpha if alpha is not None else config.data.alpha
    config.rounds, config.eval_every = args.rounds, max(1, args.rounds // 4)
    if args.quick:
        config.agents, config.model, config.data.name, config.data.path = 4, "mlp", "digits", None
        config.eval_samples = 0
    setup = prepare(config)
    config.run_id = setup.run_id
    run_dir = Path(tempfile.mkdtemp(prefix="p2pfl-bench-"))
    try:
        save_config(config, run_dir / "config.yaml")
        if args.processes:
            from p2pfl.agents.launcher import launch_local

            launch_local(config, run_dir / "config.yaml", run_dir, show_progress=False)
        else:
            run_simulation(setup, run_dir)
        return summarize(config, setup.dataset, run_dir, "processes" if args.processes else "simulate")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def mean_std(values: list[float]) -> str:
    return f"{100 * np.mean(values):.2f} ± {100 * np.std(values):.2f}"


def write_table(args: argparse.Namespace, results: dict[str, dict]) -> str:
    lines = ["| split | algorithm | local models' test accuracy (%) | consensus model's test accuracy (%) | seeds |",
             "| --- | --- | --- | --- | --- |"]
    groups: dict[tuple, list[dict]] = {}
    for (partition, alpha, algorithm, seed) in cells(args):
        summary = results.get(key(partition, alpha, algorithm, seed))
        if summary:
            groups.setdefault((partition, alpha, algorithm), []).append(summary)
    for (partition, alpha, algorithm), runs in groups.items():
        split = f"Dirichlet α = {alpha}" if partition == "dirichlet" else "IID (ceiling)"
        lines.append(f"| {split} | {LABELS[algorithm]} | {mean_std([r['local_accuracy_mean'] for r in runs])} | "
                     f"{mean_std([r['consensus_accuracy'] for r in runs])} | {len(runs)} |")
    return "\n".join(lines)


def plot(args: argparse.Namespace, results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = [("dirichlet", a) for a in args.alphas] + ([("iid", None)] if args.iid_algorithm else [])
    fig, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 4), squeeze=False)
    for ax, (partition, alpha) in zip(axes[0], splits):
        for algorithm in (args.algorithms if partition == "dirichlet" else [args.iid_algorithm]):
            curves = [results[k]["local_accuracy_curve"] for k in
                      (key(partition, alpha, algorithm, s) for s in args.seeds) if k in results]
            if curves:
                rounds = [r for r, _ in curves[0]]
                ax.plot(rounds, np.mean([[a for _, a in c] for c in curves], axis=0), marker="o",
                        label=LABELS[algorithm])
        ax.set(title="IID" if partition == "iid" else f"Dirichlet α = {alpha}", xlabel="round",
               ylabel="test accuracy (mean of local models)", ylim=(0, 1))
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def key(partition: str, alpha: float | None, algorithm: str, seed: int) -> str:
    return f"{partition}-{alpha}-{algorithm}-{seed}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "examples" / "ccl_fmnist_ring16.yaml"))
    parser.add_argument("--rounds", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHM_OPTIONS))
    parser.add_argument("--iid-algorithm", default="dsgdm-n", help="Algorithm of the IID row ('' for none).")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--processes", action="store_true", help="Run agents as processes (faster on 2 cores).")
    parser.add_argument("--quick", action="store_true", help="Smoke test: 4 agents, MLP, digits, few rounds.")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seeds, args.alphas = min(args.rounds, 8), args.seeds[:1], args.alphas[:1]
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    stem = "ccl_quick" if args.quick else "ccl_fmnist"
    raw_path = out / f"{stem}_runs.json"
    results: dict[str, dict] = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    todo = [c for c in cells(args) if key(*c) not in results]
    started = time.time()
    for i, cell in enumerate(todo, 1):
        summary = run_one(args, *cell)
        results[key(*cell)] = summary
        raw_path.write_text(json.dumps(results, indent=1))
        elapsed = time.time() - started
        print(f"[{i}/{len(todo)}] {key(*cell)}: local {100 * summary['local_accuracy_mean']:.2f}%, consensus "
              f"{100 * summary['consensus_accuracy']:.2f}% ({elapsed / 60:.1f} min, "
              f"~{elapsed / i * (len(todo) - i) / 60:.0f} min left)", flush=True)
    table = write_table(args, results)
    header = (f"LeNet-5, ring of 16, batch 32, {args.rounds} rounds, seeds {args.seeds}. Local = mean over the 16 "
              "agents of each local model's test accuracy; consensus = the exact parameter average's.\n\n")
    (out / f"{stem}.md").write_text(header + table + "\n")
    plot(args, results, out / f"{stem}.png")
    print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
