"""The mixing's compiled loops (p2pfl/algorithms/mixing_kernel.py) beside torch's ops, warm, on one thread.

Both ways of each mixing run alternately on the same LeNet-5-sized float32 vectors (61,706 parameters) and give
the same floats (checked here too): DSGD's gossip sum `w_i x_i + sum_j w_ij x_j` (base.gossip_average) and QGM's
and CCL's step towards the neighbours `x_i + gamma sum_j w_ij (x_j - x_i)` (qgm.mix_with_step), with 2 (ring) and
4 (torus) neighbours. In a run the vectors come from memory, not from the caches, and the gain is smaller.

    python benchmarks/mixing_kernels.py [--repeats 5] [--number 2000]
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from p2pfl.algorithms.mixing_kernel import step_toward, weighted_sum  # noqa: E402

SIZE = 61706  # LeNet-5's parameters


def torch_sum(own, vectors, weights, own_weight):
    total = own * own_weight
    scratch = torch.empty_like(total)
    for vector, weight in zip(vectors, weights):
        total.add_(torch.mul(vector, weight, out=scratch))
    return total


def torch_step(own, vectors, weights, gamma):
    delta = torch.zeros_like(own)
    for vector, weight in zip(vectors, weights):
        delta += weight * (vector - own)
    return own + gamma * delta


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--number", type=int, default=2000, help="calls per timing; the best of --repeats is kept")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for neighbours in (2, 4):
        own = torch.randn(SIZE, generator=generator)
        vectors = [torch.randn(SIZE, generator=generator) for _ in range(neighbours)]
        weights = [1 / (neighbours + 1)] * neighbours
        kinds = {"gossip sum": (lambda: torch_sum(own, vectors, weights, weights[0]),
                                lambda: weighted_sum(own, weights[0], vectors, weights)),
                 "step towards (QGM, CCL)": (lambda: torch_step(own, vectors, weights, 0.9),
                                             lambda: step_toward(own, vectors, weights, 0.9))}
        for name, (theirs, ours) in kinds.items():
            if not torch.equal(theirs(), ours()):
                raise AssertionError(f"{name}, {neighbours} neighbours: the loops' floats differ from torch's")
            times = {"torch": [], "compiled": []}
            for _ in range(args.repeats):  # alternating, so both see the same moments of the machine
                for label, function in (("torch", theirs), ("compiled", ours)):
                    times[label].append(timeit.timeit(function, number=args.number) / args.number * 1e6)
            rows.append({"mixing": name, "neighbours": neighbours, "torch_us": min(times["torch"]),
                         "compiled_us": min(times["compiled"])})
    print("| mixing | neighbours | torch µs | compiled µs | ratio |\n| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['mixing']} | {row['neighbours']} | {row['torch_us']:.1f} | {row['compiled_us']:.1f} | "
              f"{row['compiled_us'] / row['torch_us']:.2f} |")
    return rows


if __name__ == "__main__":
    main()
