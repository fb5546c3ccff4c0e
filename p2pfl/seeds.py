"""Every random stream of a run, derived from the run seed by name.

A stream's seed is a stable hash of (run seed, stream name, keys such as an agent id), so two streams
never share a seed by an accident of offsets, every stream follows the run seed, and a new stream
leaves the others alone. The run seed itself (not a derived one) seeds the data split and the
initial model, as the CCL authors' code does, so those stay comparable with it.
"""

from __future__ import annotations

import hashlib

STREAMS: dict[str, str] = {
    "batches": "an agent's (or client's) mini-batch order; key: the agent id",
    "participation": "which clients a coordinator asks each round",
    "assignment": "the random first assignment of clients to cluster models",
    "cluster-model": "the initial parameters of cluster model k (init: random); key: k",
    "projection-head": "CP-CFL's projection head on top of the encoder",
    "coordinator-pool": "the coordinator's unlabeled sample for CP-CFL pre-training on the coordinator",
    "coordinator-pretrain": "augmentations and batch order of that pre-training",
    "public-sample": "FedTSDP's public images every client scores",
    "hopkins": "FedTSDP's Hopkins statistic draws",
    "clustering": "k-means initialisation of CLoVE",
    "task-samples": "which samples a low-data client of the multi-task method keeps; key: the client",
    "label-swap": "the label permutation of a label-swap cluster; key: the cluster",
    "compression": "CHOCO's random-k indices and QSGD's rounding, seeded by the agent id; key: the round",
}


def stream_seed(run_seed: int, stream: str, *keys: int) -> int:
    """Seed of one named stream (32 bits: numpy, torch and scikit-learn all take it)."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; name it in p2pfl.seeds.STREAMS")
    text = ":".join(str(part) for part in (run_seed, stream, *keys))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little")
