"""Every random stream of a run is derived from the run seed by name (p2pfl/seeds.py)."""

import re
from pathlib import Path

import numpy as np
import pytest

from p2pfl.data.clusters import label_permutation
from p2pfl.seeds import STREAMS, stream_seed

PACKAGE = Path(__file__).resolve().parents[1] / "p2pfl"


def test_stream_seeds_are_stable_distinct_and_follow_the_run_seed():
    assert stream_seed(0, "batches", 3) == stream_seed(0, "batches", 3)  # same run, same stream
    seeds = {stream_seed(run, name, key) for run in range(3) for name in STREAMS for key in range(4)}
    assert len(seeds) == 3 * len(STREAMS) * 4  # no two streams (or agents, or runs) share a seed
    assert all(0 <= s < 2**32 for s in seeds)
    assert stream_seed(7, "batches", 1) == 4034745429  # a hash of the names, the same on every machine
    with pytest.raises(ValueError, match="unknown random stream"):
        stream_seed(0, "batchez")


def test_label_swap_permutations_follow_the_run_seed():
    assert (label_permutation(0, 10, seed=5) == np.arange(10)).all()  # cluster 0 keeps its labels
    assert (label_permutation(2, 10, seed=5) == label_permutation(2, 10, seed=5)).all()
    assert not (label_permutation(2, 10, seed=5) == label_permutation(2, 10, seed=6)).all()
    assert sorted(label_permutation(3, 10, seed=5)) == list(range(10))


def test_no_seed_is_an_offset_of_the_run_seed():
    offsets = re.compile(r"seed\s*[-+*]\s*[\d(]|\d\s*[-+*]\s*\w*seed|default_rng\(\d+\s*[-+*]")
    found = [f"{path.name}: {line.strip()}" for path in PACKAGE.rglob("*.py")
             for line in path.read_text().splitlines() if offsets.search(line)]
    assert found == []
