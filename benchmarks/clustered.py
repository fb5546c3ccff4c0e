"""The coordinator methods on real data (digits; Fashion-MNIST with --datasets), in-process
(`--simulate` runs the same strategy code the processes run). Four tables:

1. Clustered FL, 4 clusters x 5 clients, rotations and label swaps, from random and identical
   initial models: FedAvg, IFCA, CLoVE, CP-CFL, FedTSDP and the local-only floor. ARI per round,
   first round with ARI = 1, share of the most chosen model in the first clustered round, final
   accuracy (each client, its own model, its own cluster's test data).
2. CLoVE unsupervised: autoencoders, 10 clusters of 2 clients, one digit class per cluster.
3. FedTSDP's Hopkins statistic on an IID split and on clustered splits.
4. Multi-task (M-Fed) against per-task FedAvg and local-only, with low-data clients on one task.

    python benchmarks/clustered.py [--datasets digits fashion-mnist] [--seeds 0 1 2] [--rounds 8]
Writes benchmarks/results/clustered.md and clustered_runs.json. Every group of rows is one `p2pfl sweep`
of named cells over an example config (the command lines are listed under the tables), resumable in --runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from p2pfl.cli.sweep_cmd import run_sweep
from p2pfl.config import load_config
from p2pfl.overrides import apply_values
from p2pfl.sweep import by_cell, sweep_command
from p2pfl.sweep_cells import cells_of

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
INIT_MATTERS = ("ifca", "clove", "cpcfl")  # the others start from one model whatever `init` says
NAMES = {"fedavg": "FedAvg", "ifca": "IFCA", "clove": "CLoVE", "cpcfl": "CP-CFL", "fedtsdp": "FedTSDP",
         "local-only": "local only", "mtl": "M-Fed"}


class Sweeps:
    """The benchmark's sweeps: each group of rows is one sweep of named cells over an example config."""

    def __init__(self, runs: Path, run_plots: bool = True, in_process: bool = False):
        """`in_process`: each run in this process (the smoke test: no worker start-up per run)."""
        self.runs, self.run_plots, self.in_process, self.commands, self.summaries = runs, run_plots, in_process, [], []

    def run(self, name: str, example: str, dataset: str, seeds: list[int], rounds: int,
            cells: dict[str, dict]) -> dict[str, list[dict]]:
        """Each cell's summaries over the seeds; Fashion-MNIST clients train 1 local epoch (~3,000 samples,
        ~94 steps), digits clients the example's 3."""
        sets = {"rounds": rounds, "data.name": dataset, **({"options.local_epochs": 1} if dataset != "digits" else {})}
        base = apply_values(load_config(ROOT / "examples" / example), sets)
        named = cells_of([], list(cells.items()))
        rows, _, _ = run_sweep(base, named, seeds, self.runs / f"{name}-{dataset}", simulate=True,
                               in_process=self.in_process, run_plots=self.run_plots)
        self.commands.append(sweep_command(f"examples/{example}", cells=named, sets=sets, seeds=seeds))
        for row in rows:
            self.summaries.append({**{k: v for k, v in row["summary"].items() if k != "run_dir"},
                                   "cell": row["cell"], "seed": row["seed"], "dataset": dataset})
        return by_cell(rows)


def mean_std(values: list[float], scale: float = 100.0) -> str:
    """Mean ± sample std over the seeds, as the sweep reports it; one seed: its value."""
    values = [scale * v for v in values]
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def final_aris(summaries: list[dict]) -> str:
    return ", ".join(f"{s['final_ari']:.2f}" for s in summaries)


def first_perfect(summaries: list[dict]) -> str:
    rounds = [s["first_round_with_ari_1"] for s in summaries]
    if all(r is None for r in rounds):
        return "never"
    # rounds counted from the first clustered round (CP-CFL's pre-training rounds come before it)
    offsets = [s["rounds_logged"][0] if s["rounds_logged"] else 0 for s in summaries]
    return ", ".join("never" if r is None else str(r - o) for r, o in zip(rounds, offsets))


def clustered_table(datasets: list[str], seeds: dict[str, list[int]], rounds: int, sweeps: Sweeps,
                    quick: bool = False) -> list[str]:
    lines = ["| data | clusters | initial models | method | ARI per round (seed 0; first clustered round .. final) | "
             "first round with ARI = 1 (per seed) | share of the most chosen model, first round | "
             "final accuracy (%) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    kinds = ("rotation",) if quick else ("rotation", "label-swap")
    inits = ("random",) if quick else ("random", "identical")
    methods = ("fedavg", "ifca", "clove", "cpcfl", "fedtsdp", "local-only")
    rows = [(kind, init, method) for kind in kinds for init in inits for method in methods
            if init == "random" or method in INIT_MATTERS]
    for dataset in datasets:
        # FedTSDP runs from its own example (its thresholds); the others from CLoVE's, only the method changed
        clove = sweeps.run("clustered", "clove_rotated.yaml", dataset, seeds[dataset], rounds, {
            f"{kind} {init} {method}": {"algorithm": method, "options.cluster_kind": kind, "options.init": init}
            for kind, init, method in rows if method != "fedtsdp"})
        fedtsdp = sweeps.run("clustered-fedtsdp", "fedtsdp_label_swap.yaml", dataset, seeds[dataset], rounds, {
            f"{kind} {init} fedtsdp": {"options.cluster_kind": kind} for kind, init, method in rows
            if method == "fedtsdp"})
        for kind, init, method in rows:
            summaries = {**clove, **fedtsdp}[f"{kind} {init} {method}"]
            s0 = summaries[0]
            aris = " ".join("-" if a is None else f"{a:.2f}" for a in s0["ari_per_round"])
            share = s0["round0_collapse_share"]
            init_shown = init if method in INIT_MATTERS else "-"
            line = (f"| {dataset} | {kind} | {init_shown} | {NAMES[method]} | {aris or '-'} | "
                    f"{first_perfect(summaries) if s0['final_ari'] is not None else '-'} | "
                    f"{'-' if share is None else f'{share:.2f}'} | "
                    f"{mean_std([s['final_accuracy'] for s in summaries])} |")
            lines.append(line)
    return lines


def unsupervised_table(seeds: list[int], rounds: int, sweeps: Sweeps, quick: bool = False) -> list[str]:
    lines = ["| method | initial models | ARI per round (seed 0) | final ARI (per seed) | "
             "final reconstruction MSE |", "| --- | --- | --- | --- | --- |"]
    variants = (("clove", "random"), ("clove", "identical"), ("ifca", "identical"))
    variants = variants[:1] if quick else variants
    runs = sweeps.run("unsupervised", "clove_autoencoder.yaml", "digits", seeds, rounds, {
        f"{method} {init}": {"algorithm": method, "options.init": init} for method, init in variants})
    for method, init in variants:
        summaries = runs[f"{method} {init}"]
        aris = " ".join(f"{a:.2f}" for a in summaries[0]["ari_per_round"])
        lines.append(f"| {NAMES[method]} (autoencoders) | {init} | {aris} | {final_aris(summaries)} | "
                     f"{mean_std([s['final_accuracy'] for s in summaries], scale=1.0)} |")
    return lines


def hopkins_table(datasets: list[str], seeds: dict[str, list[int]], rounds: int, sweeps: Sweeps,
                  quick: bool = False) -> list[str]:
    lines = ["| data | split | Hopkins per round after warm-up (seed 0) | mean Hopkins (all seeds) | "
             "clustering triggered (seeds) | clusters found | final ARI | personal layers | "
             "JS divergence within / across true clusters (seed 0) | update cosine within / across (seed 0) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    splits = {"IID (1 cluster)": {"options.clusters": 1}, "rotation": {"options.cluster_kind": "rotation"},
              "label-swap": {"options.cluster_kind": "label-swap"},
              "label-groups": {"options.cluster_kind": "label-groups"}}
    splits = dict(list(splits.items())[:2]) if quick else splits
    for dataset in datasets:
        runs = sweeps.run("hopkins", "fedtsdp_label_swap.yaml", dataset, seeds[dataset], rounds, splits)
        for name, summaries in runs.items():
            h0 = " ".join(f"{h:.2f}" for h in summaries[0]["hopkins_per_round"])
            triggered = sum("js_within" in s for s in summaries)
            s0 = summaries[0]
            separation = [f"{s0[a]:.2f} / {s0[b]:.2f}" if a in s0 else "-"
                          for a, b in (("js_within", "js_across"), ("cos_within", "cos_across"))]
            lines.append(f"| {dataset} | {name} | {h0} | "
                         f"{np.mean([h for s in summaries for h in s['hopkins_per_round']]):.2f} | "
                         f"{triggered}/{len(summaries)} | "
                         f"{', '.join(str(s['clusters_per_round'][-1]) for s in summaries)} | "
                         f"{final_aris(summaries)} | "
                         f"{s0['personal_layers_per_round'][-1]} | {separation[0]} | {separation[1]} |")
    return lines


def multitask_table(seeds: list[int], rounds: int, sweeps: Sweeps) -> list[str]:
    lines = ["| clients | sharing | digit, 10 clients x ~72 samples (%) | parity-size, 10 clients x 8 samples (%) |",
             "| --- | --- | --- | --- |"]
    variants = {f"M-Fed, mu = {mu}": {"options.sharing": "mfed", "options.mu": mu} for mu in (0.01, 0.1, 1.0)}
    variants["FedAvg within each task"] = {"options.sharing": "per-task", "options.mu": 0.0}
    variants["local only"] = {"options.sharing": "local", "options.mu": 0.0}
    runs = sweeps.run("multitask", "mtl_digits.yaml", "digits", seeds, rounds, variants)
    for name, summaries in runs.items():
        label = name.replace("M-Fed,", "M-Fed: encoder over all, decoders per task,")
        by_task = {t: [s["final_accuracy_by_task"][t] for s in summaries] for t in ("digit", "parity-size")}
        lines.append(f"| 20 | {label} | {mean_std(by_task['digit'])} | {mean_std(by_task['parity-size'])} |")
    return lines


def cpcfl_variants_table(rounds: int, sweeps: Sweeps) -> list[str]:
    """CP-CFL on rotated Fashion-MNIST with longer pre-training, larger shifts, or on the coordinator."""
    lines = ["| variant | ARI per round (first clustered round .. final) | share of the most chosen model | "
             "final accuracy (%) |", "| --- | --- | --- | --- |"]
    variants = {"defaults (5 federated pre-training rounds, 1-px shifts)": {},
                "10 pre-training rounds": {"options.pretrain_rounds": 10}, "2-px shifts": {"options.augment_shift": 2},
                "pre-training on the coordinator's unlabeled sample": {"options.pretrain_mode": "coordinator"}}
    runs = sweeps.run("cpcfl-variants", "cpcfl_rotated.yaml", "fashion-mnist", [0], rounds, variants)
    for label, (s,) in runs.items():
        aris = " ".join(f"{a:.2f}" for a in s["ari_per_round"])
        lines.append(f"| {label} | {aris} | {s['round0_collapse_share']:.2f} | {100 * s['final_accuracy']:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["digits"], choices=["digits", "fashion-mnist"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds for digits")
    parser.add_argument("--fmnist-seeds", nargs="+", type=int, default=[0], help="seeds for Fashion-MNIST")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: one cluster kind and initialisation, two Hopkins splits, --rounds everywhere")
    parser.add_argument("--cpcfl-variants", action="store_true",
                        help="only: CP-CFL variants on rotated Fashion-MNIST (writes cpcfl_variants.md)")
    parser.add_argument("--runs", help="The sweeps' folder (default: RESULTS/runs/clustered); resumable.")
    args = parser.parse_args(argv)
    seeds = {"digits": args.seeds, "fashion-mnist": args.fmnist_seeds}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    sweeps = Sweeps(Path(args.runs) if args.runs else out / "runs" / "clustered", run_plots=not args.quick,
                    in_process=args.quick)
    if args.cpcfl_variants:
        lines = [f"Command: `python benchmarks/clustered.py --cpcfl-variants --rounds {args.rounds}`", ""]
        lines += cpcfl_variants_table(args.rounds, sweeps)
        lines += ["", "Runs: `" + sweeps.commands[0] + "`"]
        (out / "cpcfl_variants.md").write_text("\n".join(lines) + "\n")
        return
    started = time.perf_counter()
    sections = [f"Command: `python benchmarks/clustered.py --datasets {' '.join(args.datasets)} --seeds "
                f"{' '.join(map(str, args.seeds))} --fmnist-seeds {' '.join(map(str, args.fmnist_seeds))} "
                f"--rounds {args.rounds}`", "", "## Clustered FL (4 clusters x 5 clients)"]
    sections += clustered_table(args.datasets, seeds, args.rounds, sweeps, args.quick)
    sections += ["", "## CLoVE unsupervised (autoencoders, 10 one-class clusters x 2 clients, digits)"]
    sections += unsupervised_table(args.seeds, args.rounds if args.quick else 6, sweeps, args.quick)
    sections += ["", "## FedTSDP: Hopkins statistic (threshold 0.75), 4 clusters x 5 clients"]
    sections += hopkins_table(args.datasets, seeds, args.rounds, sweeps, args.quick)
    sections += ["", "## Multi-task, heterogeneous decoders (digits)"]
    sections += multitask_table(args.seeds, args.rounds if args.quick else 10, sweeps)
    runs = sweeps.summaries
    sections += ["", f"{len(runs)} runs in {time.perf_counter() - started:.0f} s (runs found finished in --runs "
                     "are not rerun).", "", "## The sweeps behind the tables", ""]
    sections += [f"- `{command}`" for command in sweeps.commands]
    (out / "clustered.md").write_text("\n".join(sections) + "\n")
    (out / "clustered_runs.json").write_text(json.dumps(runs, indent=1))
    print("\n".join(sections))
    print(f"{len(runs)} runs in {time.perf_counter() - started:.0f} s -> {out / 'clustered.md'}")


if __name__ == "__main__":
    main()
