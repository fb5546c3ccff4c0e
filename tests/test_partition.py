import numpy as np
import pytest

from p2pfl.data.partition import dirichlet_partition, iid_partition
from p2pfl.errors import UserError

LABELS = np.repeat(np.arange(10), 180)  # 1800 samples, 10 balanced classes


@pytest.mark.parametrize("alpha", [0.01, 0.1, 1.0, 10.0])
def test_dirichlet_gives_equal_disjoint_shards(alpha):
    shards = dirichlet_partition(LABELS, 16, alpha, seed=0)
    assert [len(s) for s in shards] == [1800 // 16] * 16
    everything = np.concatenate(shards)
    assert len(np.unique(everything)) == len(everything)


def classes_per_agent(shards, min_share=0.05):
    return np.mean([sum(np.mean(LABELS[s] == c) >= min_share for c in range(10)) for s in shards])


def test_smaller_alpha_means_fewer_classes_per_agent():
    skewed = classes_per_agent(dirichlet_partition(LABELS, 16, 0.01, seed=0))
    mild = classes_per_agent(dirichlet_partition(LABELS, 16, 1.0, seed=0))
    flat = classes_per_agent(dirichlet_partition(LABELS, 16, 100.0, seed=0))
    assert skewed <= 2.0 < mild < flat
    assert flat >= 9


def test_same_seed_same_split_other_seed_other_split():
    a = dirichlet_partition(LABELS, 8, 0.1, seed=3)
    b = dirichlet_partition(LABELS, 8, 0.1, seed=3)
    c = dirichlet_partition(LABELS, 8, 0.1, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_is_balanced_and_covers_all_classes():
    shards = iid_partition(LABELS, 6, seed=0)
    assert [len(s) for s in shards] == [300] * 6
    assert all(len(np.unique(LABELS[s])) == 10 for s in shards)


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_non_positive_alpha_is_a_user_error(alpha):
    with pytest.raises(UserError, match="alpha must be > 0"):
        dirichlet_partition(LABELS, 4, alpha, seed=0)
