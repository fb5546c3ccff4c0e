"""Time-varying topologies against fixed ones, measured on this machine.

(a) consensus: the largest distance to the average after log2(n) gossip rounds, from random vectors,
    with each topology's mixing matrices (no training), and the messages each agent sends per round;
(b) digits: examples/ring16.yaml (16 agents, DSGDm-N, Dirichlet alpha 0.1) run with --simulate on each
    topology: mean local and consensus test accuracy, bytes sent per agent per round. These runs are one
    `p2pfl sweep` over topology.kind (the command is written above the table), resumable in --runs.

    python benchmarks/dynamic_topologies.py [--seeds 0 1 2] [--rounds 300] [--results benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from p2pfl.cli.sweep_cmd import run_sweep
from p2pfl.config import load_config
from p2pfl.overrides import apply_values
from p2pfl.sweep import benchmark_runs, fmt, sweep_command
from p2pfl.sweep_cells import cells_of
from p2pfl.topologies import DYNAMIC_TOPOLOGIES, TopologySequence, build_topology, mixing_matrix
from p2pfl.topologies.dynamic import round_matrix

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("one-peer-exponential", "random-matching", "peer-sampling", "exponential", "ring")


def matrices(kind: str, n: int, rounds: int, seed: int) -> list[np.ndarray]:
    if kind in DYNAMIC_TOPOLOGIES:
        sequence = TopologySequence(kind, n, seed, peers=1)
        return [round_matrix(sequence.graph(t)) for t in range(rounds)]
    return [mixing_matrix(build_topology(kind, n))] * rounds


def messages_per_round(matrix: np.ndarray) -> float:
    """Messages an agent sends per round: the off-diagonal non-zeros of its column of W."""
    off = matrix - np.diag(np.diag(matrix))
    return float((off > 0).sum(axis=0).mean())


def consensus_rows(sizes: list[int], kinds: tuple[str, ...], seed: int) -> list[dict]:
    rows = []
    for n in sizes:
        rounds = math.ceil(math.log2(n))
        start = np.random.default_rng(seed).normal(size=(n, 1000))
        for kind in kinds:
            ws = matrices(kind, n, rounds, seed)
            x = start
            for w in ws:
                x = w @ x
            rows.append({"agents": n, "kind": kind, "rounds": rounds,
                         "error": float(np.abs(x - x.mean(axis=0)).max() / np.abs(start - start.mean(axis=0)).max()),
                         "messages": float(np.mean([messages_per_round(w) for w in ws]))})
    return rows


BYTES = "bytes_sent_per_agent_per_round"


def digits_sweep(kinds: list[str], seeds: list[int], rounds: int, runs: Path) -> tuple[list[dict], str]:
    """examples/ring16.yaml with only the topology changed; returns the sweep's table and its command line."""
    sets = {"rounds": rounds, "eval_every": rounds, "topology.degree": 1}  # peer-sampling: one peer drawn per agent
    base = apply_values(load_config(ROOT / "examples" / "ring16.yaml"), sets)
    grid = [("topology.kind", list(kinds))]
    _, table, metrics = run_sweep(base, cells_of(grid), seeds, runs, simulate=True, metrics=(BYTES,))
    command = sweep_command("examples/ring16.yaml", grid=grid, sets=sets, seeds=seeds, metrics=(BYTES,))
    return [{"kind": e["values"]["topology.kind"], **{m.key: e[m.key] for m in metrics}} for e in table], command


def tables(consensus: list[dict], digits: list[dict], seeds: list[int], rounds: int, command: str) -> str:
    lines = ["| agents | topology | rounds (log2 n) | consensus error (max, relative) | messages per agent per round |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['agents']} | {r['kind']} | {r['rounds']} | {r['error']:.1e} | {r['messages']:.2f} |" for r in consensus]
    lines += ["", f"Digits, 16 agents, DSGDm-N, {rounds} rounds, seeds {', '.join(map(str, seeds))} "
              f"(mean ± sample std): `{command}`", "",
              "| topology | local models accuracy (%) | consensus model accuracy (%) | KB sent per agent per round |",
              "| --- | --- | --- | --- |"]
    for r in digits:
        lines.append(f"| {r['kind']} | {fmt(r['local_accuracy_mean'], percent=True)} | "
                     f"{fmt(r['consensus_accuracy'], percent=True)} | {r[BYTES]['mean'] / 1e3:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--runs", help="The sweep's folder (default: RESULTS/runs/dynamic_topologies); resumable.")
    args = parser.parse_args(argv)
    consensus = consensus_rows(args.sizes, tuple(args.kinds), args.seeds[0])
    digits, command = digits_sweep(args.kinds, args.seeds, args.rounds,
                                   benchmark_runs(args.runs, args.results, "dynamic_topologies"))
    text = tables(consensus, digits, args.seeds, args.rounds, command)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "dynamic_topologies.md").write_text(text)
    (args.results / "dynamic_topologies.json").write_text(json.dumps({"consensus": consensus, "digits": digits}))
    print(text)
    return text


if __name__ == "__main__":
    main()
