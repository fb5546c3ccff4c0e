"""The CCL authors' pipeline as config options: their split, their DataLoader stream, their
normalisation, their last partial batch and their gossip-then-step order."""

import numpy as np
import pytest
import torch

from p2pfl.agents.agent import batch_stream, reference_rng_state
from p2pfl.algorithms.base import flat_params, learning_rate
from p2pfl.config import OptimConfig, RunConfig
from p2pfl.data import BatchStream, Shard
from p2pfl.data.dataset import ArrayDataset
from p2pfl.data.normalize import normalized
from p2pfl.data.order import ReferenceShuffler
from p2pfl.data.partition import lin_dirichlet_partition, partition
from p2pfl.errors import UserError
from p2pfl.models.initial import initial_model
from tests.helpers import graph, make_agents, step_all

LABELS = (np.arange(1200) * 7 % 10).astype(np.int64)


@pytest.mark.parametrize("agents,alpha,seed,expected", [
    # First indices of shards 0, n/2 and n-1, printed by the authors' own DataPartitioner (their
    # partition_data.py at caef56d) on these labels in a scratch folder outside the project.
    (16, 0.01, 123, [[553, 203, 693, 13], [91, 1021, 561, 461], [385, 885, 945, 535]]),
    (12, 0.5, 7, [[830, 750, 280, 140], [173, 853, 543, 343], [1000, 190, 100, 710]]),
])
def test_lin_split_gives_the_reference_shards(agents, alpha, seed, expected):
    shards = lin_dirichlet_partition(LABELS, agents, alpha, seed)
    assert [list(shards[a][:4]) for a in (0, agents // 2, agents - 1)] == expected
    assert {len(s) for s in shards} == {len(LABELS) // agents}
    flat = np.concatenate(shards)
    assert len(np.unique(flat)) == len(flat)  # disjoint


def test_lin_split_is_skewed_at_small_alpha_and_keeps_its_order():
    labels = np.repeat(np.arange(10), 300)
    shards = partition(labels, 16, "lin", 0.01, seed=3)
    dominant = [np.bincount(labels[s], minlength=10).max() / len(s) for s in shards]
    assert np.median(dominant) > 0.6
    assert any(list(s) != sorted(s) for s in shards)  # the reference's order, which fixes the batches
    with pytest.raises(UserError, match="alpha"):
        lin_dirichlet_partition(labels, 4, 0.0, 0)


def torch_loader_orders(rng_state: torch.Tensor, n: int, epochs: int) -> list[list[int]]:
    """What a shuffling torch DataLoader yields, epoch by epoch, with an evaluation loader between."""
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(rng_state)
        train = torch.utils.data.DataLoader(list(range(n)), batch_size=32, shuffle=True)
        test = torch.utils.data.DataLoader(list(range(5)), batch_size=128)
        orders = []
        for _ in range(epochs):
            orders.append([int(i) for batch in train for i in batch])
            for _ in test:
                pass
        return orders


def test_reference_order_replays_a_torch_dataloader():
    state = torch.manual_seed(11).get_state()
    shuffler = ReferenceShuffler(state)
    assert [shuffler.permutation(70).tolist() for _ in range(3)] == torch_loader_orders(state, 70, 3)


def images(n=40, classes=4):
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    return ArrayDataset("toy", x, np.arange(n) % classes, x[:8], np.arange(8) % classes, classes)


def test_reference_rng_state_follows_the_model_init_and_rank_0s_probe():
    config = RunConfig(seed=5, model="lenet5")
    data = images()
    after_init = reference_rng_state(config, data, 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        assert torch.equal(flat_params(initial_model(config, data)),
                           flat_params(initial_model(config, data)))
        torch.manual_seed(5)
        from p2pfl.models import build_model
        build_model("lenet5", data.input_shape, data.num_classes)
        assert torch.equal(torch.get_rng_state(), after_init)
        torch.rand(2, 1, 28, 28)
        assert torch.equal(torch.get_rng_state(), reference_rng_state(config, data, 0))


@pytest.mark.parametrize("drop_last,batches,last", [(False, 118, 6), (True, 117, 32)])
def test_last_partial_batch(drop_last, batches, last):
    n = 3750
    shard = Shard(torch.zeros(n, 1), torch.arange(n), torch.zeros(1, 1), torch.zeros(1), 10)
    stream = BatchStream(shard, 32, seed=0, drop_last=drop_last)
    sizes = [len(stream.next()[1]) for _ in range(batches)]
    assert stream.epoch == 1 and sizes[-1] == last
    stream.next()
    assert stream.epoch == 2  # the next batch opens the second epoch


def test_batch_stream_reference_order_through_the_agent_config():
    config = RunConfig(seed=2, model="lenet5")
    config.data.order, config.data.drop_last = "reference", False
    data = images(70)
    shard = Shard(torch.from_numpy(data.x_train), torch.arange(70), torch.zeros(1), torch.zeros(1), 4)
    stream = batch_stream(config, data, 3, shard)
    got = [int(i) for _ in range(3) for i in stream.next()[1]]  # 32 + 32 + 6
    assert got == torch_loader_orders(reference_rng_state(config, data, 3), 70, 1)[0]


def test_normalisations():
    data = images()
    fixed = normalized(data, "fixed", 0.5, 0.5)
    assert fixed.x_train.min() >= -1 and fixed.x_train.max() <= 1
    assert np.allclose(fixed.x_test, (data.x_test - 0.5) / 0.5)
    z = normalized(data, "zscore")
    assert abs(float(z.x_train.mean())) < 1e-5 and abs(float(z.x_train.std()) - 1) < 1e-4
    assert normalized(data, "none") is data
    with pytest.raises(UserError, match="normalize"):
        normalized(data, "minmax")


@pytest.mark.parametrize("algorithm,options", [("dsgdm-n", {}), ("qgm", {"variant": "ccl"}),
                                               ("qgm", {"variant": "lin"})])
def test_mix_first_keeps_the_average_and_moves_the_evaluation_point(algorithm, options):
    """Gossip-then-step (the CCL authors' order) and step-then-gossip run the same iterates: the
    agents' average is the same after every round, only where a local model is read differs."""
    g = graph("ring", 4)
    optim = OptimConfig(lr=0.1)
    rng = torch.Generator().manual_seed(0)
    data = [[(torch.randn(4, 3, generator=rng), torch.randint(0, 3, (4,), generator=rng)) for _ in range(4)]
            for _ in range(5)]
    first = make_agents(algorithm, g, optim, {**options, "mix_first": False})
    later = make_agents(algorithm, g, optim, {**options, "mix_first": True})
    for round_, batch in enumerate(data):
        step_all(first, round_, batch)
        step_all(later, round_, batch)
        mean = lambda agents: torch.stack([flat_params(a.ctx.model) for a in agents]).mean(0)  # noqa: E731
        assert torch.allclose(mean(first), mean(later), atol=1e-6)
    assert not torch.allclose(flat_params(first[0].ctx.model), flat_params(later[0].ctx.model))


def test_warmup_ramps_a_step_schedule():
    warm = OptimConfig(lr=0.1, schedule="step", warmup_rounds=10)
    assert [round(learning_rate(warm, r, 100, 4), 6) for r in (0, 4, 9, 10, 50, 80)] == \
        [0.01, 0.05, 0.1, 0.1, 0.01, 0.001]
