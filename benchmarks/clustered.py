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
Writes benchmarks/results/clustered.md and clustered_runs.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from p2pfl.agents.federated import summarize_federated
from p2pfl.agents.setup import prepare
from p2pfl.agents.simulate import run_simulation
from p2pfl.config import load_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
INIT_MATTERS = ("ifca", "clove", "cpcfl")  # the others start from one model whatever `init` says
NAMES = {"fedavg": "FedAvg", "ifca": "IFCA", "clove": "CLoVE", "cpcfl": "CP-CFL", "fedtsdp": "FedTSDP",
         "local-only": "local only", "mtl": "M-Fed"}


def run(example: str, dataset: str, seed: int, rounds: int, algorithm: str | None = None, model: str | None = None,
        agents: int | None = None, **options) -> dict:
    config = load_config(ROOT / "examples" / example)
    config.seed, config.rounds, config.data.name = seed, rounds, dataset
    config.algorithm = algorithm or config.algorithm
    config.model = model or config.model
    config.agents = agents or config.agents
    if dataset != "digits":
        config.options["local_epochs"] = 1  # ~3,000 samples a client: one epoch is ~94 steps
    config.options.update(options)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run_simulation(prepare(config), Path(tmp))
        summary = summarize_federated(config, Path(tmp))
    summary.update(seed=seed, dataset=dataset, seconds=time.perf_counter() - started)
    summary.pop("run_dir")
    return summary


def mean_std(values: list[float], scale: float = 100.0) -> str:
    values = [scale * v for v in values]
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def final_aris(summaries: list[dict]) -> str:
    return ", ".join(f"{s['final_ari']:.2f}" for s in summaries)


def first_perfect(summaries: list[dict]) -> str:
    rounds = [s["first_round_with_ari_1"] for s in summaries]
    if all(r is None for r in rounds):
        return "never"
    # rounds counted from the first clustered round (CP-CFL's pre-training rounds come before it)
    offsets = [s["rounds_logged"][0] if s["rounds_logged"] else 0 for s in summaries]
    return ", ".join("never" if r is None else str(r - o) for r, o in zip(rounds, offsets))


def clustered_table(datasets: list[str], seeds: dict[str, list[int]], rounds: int, runs: list,
                    quick: bool = False) -> list[str]:
    lines = ["| data | clusters | initial models | method | ARI per round (seed 0; first clustered round .. final) | "
             "first round with ARI = 1 (per seed) | share of the most chosen model, first round | "
             "final accuracy (%) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for dataset in datasets:
        for kind in ("rotation",) if quick else ("rotation", "label-swap"):
            for init in ("random",) if quick else ("random", "identical"):
                for method in ("fedavg", "ifca", "clove", "cpcfl", "fedtsdp", "local-only"):
                    if init == "identical" and method not in INIT_MATTERS:
                        continue
                    example = "fedtsdp_label_swap.yaml" if method == "fedtsdp" else "clove_rotated.yaml"
                    summaries = [run(example, dataset, seed, rounds, method, cluster_kind=kind, init=init)
                                 for seed in seeds[dataset]]
                    runs.extend(summaries)
                    s0 = summaries[0]
                    aris = " ".join("-" if a is None else f"{a:.2f}" for a in s0["ari_per_round"])
                    share = s0["round0_collapse_share"]
                    init_shown = init if method in INIT_MATTERS else "-"
                    line = (f"| {dataset} | {kind} | {init_shown} | {NAMES[method]} | {aris or '-'} | "
                            f"{first_perfect(summaries) if s0['final_ari'] is not None else '-'} | "
                            f"{'-' if share is None else f'{share:.2f}'} | "
                            f"{mean_std([s['final_accuracy'] for s in summaries])} |")
                    print(line, flush=True)
                    lines.append(line)
    return lines


def unsupervised_table(seeds: list[int], rounds: int, runs: list, quick: bool = False) -> list[str]:
    lines = ["| method | initial models | ARI per round (seed 0) | final ARI (per seed) | "
             "final reconstruction MSE |", "| --- | --- | --- | --- | --- |"]
    variants = (("clove", "random"), ("clove", "identical"), ("ifca", "identical"))
    for method, init in variants[:1] if quick else variants:
        summaries = [run("clove_autoencoder.yaml", "digits", seed, rounds, method, init=init) for seed in seeds]
        runs.extend(summaries)
        aris = " ".join(f"{a:.2f}" for a in summaries[0]["ari_per_round"])
        line = (f"| {NAMES[method]} (autoencoders) | {init} | {aris} | "
                f"{final_aris(summaries)} | "
                f"{mean_std([s['final_accuracy'] for s in summaries], scale=1.0)} |")
        print(line, flush=True)
        lines.append(line)
    return lines


def hopkins_table(datasets: list[str], seeds: dict[str, list[int]], rounds: int, runs: list,
                  quick: bool = False) -> list[str]:
    lines = ["| data | split | Hopkins per round after warm-up (seed 0) | mean Hopkins (all seeds) | "
             "clustering triggered (seeds) | clusters found | final ARI | personal layers | "
             "JS divergence within / across true clusters (seed 0) | update cosine within / across (seed 0) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    splits = [("IID (1 cluster)", {"clusters": 1}), ("rotation", {"cluster_kind": "rotation"}),
              ("label-swap", {"cluster_kind": "label-swap"}), ("label-groups", {"cluster_kind": "label-groups"})]
    splits = splits[:2] if quick else splits
    for dataset in datasets:
        for name, options in splits:
            summaries = [run("fedtsdp_label_swap.yaml", dataset, seed, rounds, **options) for seed in seeds[dataset]]
            runs.extend(summaries)
            h0 = " ".join(f"{h:.2f}" for h in summaries[0]["hopkins_per_round"])
            triggered = sum("js_within" in s for s in summaries)
            s0 = summaries[0]
            separation = [f"{s0[a]:.2f} / {s0[b]:.2f}" if a in s0 else "-"
                          for a, b in (("js_within", "js_across"), ("cos_within", "cos_across"))]
            line = (f"| {dataset} | {name} | {h0} | "
                    f"{np.mean([h for s in summaries for h in s['hopkins_per_round']]):.2f} | "
                    f"{triggered}/{len(summaries)} | {', '.join(str(s['clusters_per_round'][-1]) for s in summaries)} | "
                    f"{final_aris(summaries)} | "
                    f"{s0['personal_layers_per_round'][-1]} | {separation[0]} | {separation[1]} |")
            print(line, flush=True)
            lines.append(line)
    return lines


def multitask_table(seeds: list[int], rounds: int, runs: list) -> list[str]:
    lines = ["| clients | sharing | digit, 10 clients x ~72 samples (%) | parity-size, 10 clients x 8 samples (%) |",
             "| --- | --- | --- | --- |"]
    variants = [("mfed", mu, f"M-Fed: encoder over all, decoders per task, mu = {mu}") for mu in (0.01, 0.1, 1.0)]
    variants += [("per-task", 0.0, "FedAvg within each task"), ("local", 0.0, "local only")]
    for sharing, mu, label in variants:
        summaries = [run("mtl_digits.yaml", "digits", seed, rounds, sharing=sharing, mu=mu) for seed in seeds]
        runs.extend(summaries)
        by_task = {t: [s["final_accuracy_by_task"][t] for s in summaries] for t in ("digit", "parity-size")}
        line = f"| 20 | {label} | {mean_std(by_task['digit'])} | {mean_std(by_task['parity-size'])} |"
        print(line, flush=True)
        lines.append(line)
    return lines


def cpcfl_variants_table(rounds: int, runs: list) -> list[str]:
    """CP-CFL on rotated Fashion-MNIST with longer pre-training, larger shifts, or on the coordinator."""
    lines = ["| variant | ARI per round (first clustered round .. final) | share of the most chosen model | "
             "final accuracy (%) |", "| --- | --- | --- | --- |"]
    variants = [("defaults (5 federated pre-training rounds, 1-px shifts)", {}),
                ("10 pre-training rounds", {"pretrain_rounds": 10}), ("2-px shifts", {"augment_shift": 2}),
                ("pre-training on the coordinator's unlabeled sample", {"pretrain_mode": "coordinator"})]
    for label, options in variants:
        s = run("cpcfl_rotated.yaml", "fashion-mnist", 0, rounds, **options)
        runs.append(s)
        aris = " ".join(f"{a:.2f}" for a in s["ari_per_round"])
        line = f"| {label} | {aris} | {s['round0_collapse_share']:.2f} | {100 * s['final_accuracy']:.2f} |"
        print(line, flush=True)
        lines.append(line)
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
    args = parser.parse_args(argv)
    seeds = {"digits": args.seeds, "fashion-mnist": args.fmnist_seeds}
    if args.cpcfl_variants:
        runs: list[dict] = []
        lines = [f"Command: `python benchmarks/clustered.py --cpcfl-variants --rounds {args.rounds}`", ""]
        lines += cpcfl_variants_table(args.rounds, runs)
        Path(args.results).mkdir(parents=True, exist_ok=True)
        (Path(args.results) / "cpcfl_variants.md").write_text("\n".join(lines) + "\n")
        return
    started = time.perf_counter()
    runs: list[dict] = []
    sections = [f"Command: `python benchmarks/clustered.py --datasets {' '.join(args.datasets)} --seeds "
                f"{' '.join(map(str, args.seeds))} --fmnist-seeds {' '.join(map(str, args.fmnist_seeds))} "
                f"--rounds {args.rounds}`", "", "## Clustered FL (4 clusters x 5 clients)"]
    sections += clustered_table(args.datasets, seeds, args.rounds, runs, args.quick)
    sections += ["", "## CLoVE unsupervised (autoencoders, 10 one-class clusters x 2 clients, digits)"]
    sections += unsupervised_table(args.seeds, args.rounds if args.quick else 6, runs, args.quick)
    sections += ["", "## FedTSDP: Hopkins statistic (threshold 0.75), 4 clusters x 5 clients"]
    sections += hopkins_table(args.datasets, seeds, args.rounds, runs, args.quick)
    sections += ["", "## Multi-task, heterogeneous decoders (digits)"]
    sections += multitask_table(args.seeds, args.rounds if args.quick else 10, runs)
    sections += ["", f"{len(runs)} runs in {time.perf_counter() - started:.0f} s."]
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "clustered.md").write_text("\n".join(sections) + "\n")
    (out / "clustered_runs.json").write_text(json.dumps(runs, indent=1))
    print(f"{len(runs)} runs in {time.perf_counter() - started:.0f} s -> {out / 'clustered.md'}")


if __name__ == "__main__":
    main()
