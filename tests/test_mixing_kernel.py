"""The compiled gossip sum gives torch's floats, bit for bit, and steps aside where it does not apply."""

import importlib
import importlib.util

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.agents.forkserver import PRELOAD
from p2pfl.algorithms.base import gossip_average
from p2pfl.algorithms.mixing_kernel import _kernels, step_toward, warm, weighted_sum
from p2pfl.algorithms.qgm import mix_with_step


def torch_sum(own, own_weight, vectors, weights):
    """Left to right, each product rounded before it is added: what gossip_average did with torch alone."""
    total = own * own_weight
    for vector, weight in zip(vectors, weights):
        total = total + vector * weight
    return total


def spread_vectors(count: int, size: int, seed: int) -> list[torch.Tensor]:
    """Values from 1e-3 to 1e3, so a product rounded once with its sum (a fused multiply-add) shows."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(size, generator=generator) * 10.0 ** (3 * (i % 3 - 1)) for i in range(count)]


@settings(max_examples=60, deadline=None)
@given(neighbours=st.integers(1, 7), size=st.integers(1, 3000), seed=st.integers(0, 2**16),
       weights=st.lists(st.floats(1e-4, 1.0), min_size=8, max_size=8))
def test_the_compiled_sum_equals_torchs_left_to_right_sum_bit_for_bit(neighbours, size, seed, weights):
    own, *vectors = spread_vectors(neighbours + 1, size, seed)
    got = weighted_sum(own, weights[-1], vectors, weights[:neighbours])
    assert got is not None
    assert torch.equal(got, torch_sum(own, weights[-1], vectors, weights[:neighbours]))


def test_a_fused_multiply_add_would_be_caught():
    """The data of the test above tells the two roundings apart: torch's addcmul rounds once per term."""
    own, *vectors = spread_vectors(5, 3000, 0)
    fused = own * 0.2
    for vector in vectors:
        fused = torch.addcmul(fused, vector, torch.tensor(0.2))
    assert not torch.equal(fused, weighted_sum(own, 0.2, vectors, [0.2] * 4))


def test_the_inputs_are_left_alone_and_the_result_is_a_new_vector():
    own, *vectors = spread_vectors(4, 100, 1)
    copies = [v.clone() for v in (own, *vectors)]
    got = weighted_sum(own, 0.5, vectors, [0.1, 0.2, 0.3])
    assert all(torch.equal(a, b) for a, b in zip((own, *vectors), copies))
    assert got.data_ptr() not in {v.data_ptr() for v in (own, *vectors)}


@pytest.mark.parametrize("case", ["float64", "strided", "other shape", "no neighbour", "requires grad", "2-D"])
def test_what_the_loops_do_not_take_is_left_to_torch(case):
    own, other = spread_vectors(2, 64, 2)
    vectors = [other]
    if case == "float64":
        own, vectors = own.double(), [other.double()]
    elif case == "strided":
        vectors = [torch.randn(128)[::2]]
    elif case == "other shape":
        vectors = [torch.randn(65)]
    elif case == "no neighbour":
        vectors = []
    elif case == "requires grad":
        own = own.clone().requires_grad_()
    elif case == "2-D":
        own, vectors = own.reshape(8, 8), [other.reshape(8, 8)]
    assert weighted_sum(own, 0.5, vectors, [0.5] * len(vectors)) is None


def test_gossip_average_gives_the_same_floats_either_way():
    """float64 goes through torch, float32 through the loops: both the left-to-right sum, renormalised."""
    own, a, b = spread_vectors(3, 500, 3)
    weights = {4: 2 / 7, 9: 0.1234567}
    for dtype in (torch.float32, torch.float64):
        x, received = own.to(dtype), {9: b.to(dtype), 4: a.to(dtype)}
        expected = torch_sum(x, 1 / 3, [received[4], received[9]], [weights[4], weights[9]])
        assert torch.equal(gossip_average(x, received, weights, 1 / 3), expected / (1 / 3 + 2 / 7 + 0.1234567))


def test_warm_compiles_every_kernel_for_float32():
    """On fresh dispatchers (numba loads a compiled kernel from its cache only when it is called), so what other
    tests compiled does not count."""
    _kernels.cache_clear()
    warm()
    assert all(any(str(signature[0].dtype) == "float32" for signature in kernel.signatures) for kernel in _kernels())


def test_the_forkserver_preloads_the_kernels_for_its_agents():
    """A preload that fails to import is skipped by multiprocessing without a word: each must at least exist, and
    the kernels' one must compile them (the guard is not imported here: it would tie pytest to its parent's life)."""
    assert "p2pfl.agents.warm_kernels" in PRELOAD
    assert all(importlib.util.find_spec(name) is not None for name in PRELOAD)
    _kernels.cache_clear()
    importlib.reload(importlib.import_module("p2pfl.agents.warm_kernels"))
    assert all(kernel.signatures for kernel in _kernels())


def torch_step(own, vectors, weights, gamma):
    """QGM's mix_with_step as torch alone computed it: delta += w * (x - own), then own + gamma * delta."""
    delta = torch.zeros_like(own)
    for vector, weight in zip(vectors, weights):
        delta += weight * (vector - own)
    return own + gamma * delta


@settings(max_examples=60, deadline=None)
@given(neighbours=st.integers(1, 7), size=st.integers(1, 3000), seed=st.integers(0, 2**16),
       weights=st.lists(st.floats(1e-4, 1.0), min_size=7, max_size=7), gamma=st.floats(0.05, 1.0))
def test_the_compiled_step_toward_the_neighbours_equals_torchs_bit_for_bit(neighbours, size, seed, weights, gamma):
    own, *vectors = spread_vectors(neighbours + 1, size, seed)
    got = step_toward(own, vectors, weights[:neighbours], gamma)
    assert got is not None
    assert torch.equal(got.view(torch.int32), torch_step(own, vectors, weights[:neighbours], gamma).view(torch.int32))


def test_mix_with_step_gives_the_same_floats_either_way():
    own, a, b, c = spread_vectors(4, 300, 5)
    weights = {3: 0.25, 1: 0.3, 8: 1 / 7}
    for dtype in (torch.float32, torch.float64):  # float64: torch's ops; float32: the loops
        x, received = own.to(dtype), {8: c.to(dtype), 1: a.to(dtype), 3: b.to(dtype)}
        expected = torch_step(x, [received[1], received[3], received[8]], [0.3, 0.25, 1 / 7], 0.9)
        assert torch.equal(mix_with_step(x, received, weights, 0.9), expected)
    assert step_toward(own.double(), [a.double()], [0.5], 1.0) is None and step_toward(own, [], [], 1.0) is None
