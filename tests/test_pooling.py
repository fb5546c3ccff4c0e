"""The compiled 2x2 max pooling gives nn.MaxPool2d(2)'s values, winners and gradients bit for bit, and steps aside
where it does not apply."""

import importlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.agents.forkserver import PRELOAD
from p2pfl.models import build_model
from p2pfl.models.pooling import MaxPool2x2, _kernels, compiled, max_pool_2x2, warm

# Few distinct values, so windows tie, hold NaNs, infinities and both zeros: where the rule for a winner shows.
SPECIAL = [float("nan"), float("-inf"), float("inf"), -0.0, 0.0, 1.0, -1.0, 2.5]


def bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view(torch.int32)


def both(x: torch.Tensor, grad: torch.Tensor):
    """(output, input gradient) of torch's op and of the compiled one."""
    results = []
    for pool in (lambda t: F.max_pool2d(t, 2), max_pool_2x2):
        leaf = x.clone().requires_grad_()
        out = pool(leaf)
        out.backward(grad)
        results.append((out.detach(), leaf.grad))
    return results


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(2, 9), w=st.integers(2, 9),
       values=st.lists(st.sampled_from(SPECIAL) | st.floats(-3, 3, width=32), min_size=1, max_size=64),
       seed=st.integers(0, 2**16))
def test_values_winners_and_gradients_equal_torchs_bit_for_bit(n, c, h, w, values, seed):
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(values), (n, c, h, w), generator=generator)
    x = torch.tensor(values, dtype=torch.float32)[pick]
    grad = torch.randn((n, c, h // 2, w // 2), generator=generator)
    grad[torch.rand(grad.shape, generator=generator) < 0.2] = -0.0  # torch's backward turns it into +0.0
    (theirs, their_grad), (ours, our_grad) = both(x, grad)
    assert compiled(x)
    assert torch.equal(bits(theirs), bits(ours))
    assert torch.equal(bits(their_grad), bits(our_grad))  # the gradient lands where torch's winner is


def test_every_window_position_can_win_and_its_gradient_lands_there():
    x = torch.zeros((1, 1, 2, 8))
    for window, position in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        x[0, 0, position[0], 2 * window + position[1]] = 1.0
    (_, their_grad), (ours, our_grad) = both(x, torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]]))
    assert ours.flatten().tolist() == [1.0] * 4
    assert torch.equal(our_grad, their_grad) and our_grad.sum() == 10.0


def test_real_activations_of_a_lenet5_batch_through_the_module():
    torch.manual_seed(0)
    model = build_model("lenet5", (1, 28, 28), 10)
    assert any(isinstance(layer, MaxPool2x2) for layer in model.body)
    activations = torch.relu(model.body[0](torch.randn(32, 1, 28, 28))).detach()
    (theirs, their_grad), (ours, our_grad) = both(activations, torch.randn(32, 6, 14, 14))
    assert torch.equal(bits(theirs), bits(ours)) and torch.equal(bits(their_grad), bits(our_grad))


@pytest.mark.parametrize("case", ["float64", "channels last", "strided", "3-D", "one row"])
def test_what_the_loops_do_not_take_is_left_to_torch(case):
    x = torch.randn(2, 3, 6, 6)
    if case == "float64":
        x = x.double()
    elif case == "channels last":
        x = x.to(memory_format=torch.channels_last)
    elif case == "strided":
        x = torch.randn(2, 3, 6, 12)[..., ::2]
    elif case == "3-D":
        x = x[0]
    elif case == "one row":
        x = torch.randn(2, 3, 1, 6)
    assert not compiled(x)
    if case == "one row":
        with pytest.raises(RuntimeError):  # torch's own error for a window larger than the input
            max_pool_2x2(x)
        return
    assert torch.equal(max_pool_2x2(x), F.max_pool2d(x, 2))
    assert max_pool_2x2(x.requires_grad_()).grad_fn.name() != "_MaxPool2x2Backward"


def test_the_input_is_left_alone_and_no_grad_works():
    x = torch.randn(2, 2, 4, 4)
    copy = x.clone()
    with torch.no_grad():
        out = max_pool_2x2(x)
    assert torch.equal(x, copy) and torch.equal(out, F.max_pool2d(x, 2)) and out.grad_fn is None


def test_warm_compiles_both_loops_for_float32():
    _kernels.cache_clear()
    warm()
    assert all(any(str(signature[0].dtype) == "float32" for signature in kernel.signatures) for kernel in _kernels())


def test_the_forkserver_preloads_the_pooling_loops_for_its_agents():
    assert "p2pfl.agents.warm_kernels" in PRELOAD
    _kernels.cache_clear()
    importlib.reload(importlib.import_module("p2pfl.agents.warm_kernels"))
    assert all(kernel.signatures for kernel in _kernels())


@pytest.mark.parametrize("name, shape", [("lenet5", (1, 28, 28)), ("cnn", (1, 8, 8))])
def test_training_with_either_pooling_gives_the_same_parameters_bit_for_bit(name, shape):
    """The models that use it train to the same floats as with torch's nn.MaxPool2d (the golden records run MLPs)."""
    models = []
    for use_torch in (True, False):
        torch.manual_seed(7)
        model = build_model(name, shape, 10)
        if use_torch:
            model.body = torch.nn.Sequential(*[torch.nn.MaxPool2d(2) if isinstance(layer, MaxPool2x2) else layer
                                               for layer in model.body])
        models.append(model)
    assert sum(isinstance(layer, MaxPool2x2) for layer in models[1].body) >= 1
    generator = torch.Generator().manual_seed(3)
    batches = [(torch.randn((16, *shape), generator=generator), torch.randint(10, (16,), generator=generator))
               for _ in range(6)]
    for model in models:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for x, y in batches:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    for theirs, ours in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(bits(theirs.detach()), bits(ours.detach()))
    torch.manual_seed(7)
    assert not torch.equal(models[1].body[0].weight, build_model(name, shape, 10).body[0].weight)  # they trained
