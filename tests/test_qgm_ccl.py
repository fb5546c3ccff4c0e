"""QGM and CCL math on tiny models against hand-computed values."""

import json

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from p2pfl.agents.setup import prepare
from p2pfl.agents.simulate import run_simulation
from p2pfl.algorithms.base import flat_params
from p2pfl.algorithms.ccl import class_counts, class_means, class_sums
from p2pfl.algorithms.qgm import mix_with_step
from p2pfl.config import OptimConfig, RunConfig
from p2pfl.errors import UserError
from p2pfl.registry import parse_algorithm_options
from p2pfl.topologies import mixing_matrix
from p2pfl.topologies.mixing import assign_mixing_weights
from tests.helpers import TinyNet, make_agents, step_all

BETA, LR, WD, MU = 0.9, 0.1, 1e-3, 0.9


def path3():
    return assign_mixing_weights(nx.path_graph(3))  # weights 1/3 on edges, w_00 = 2/3, w_11 = 1/3


def batches(n, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, generator=g), torch.randint(0, classes, (4,), generator=g)) for _ in range(n)]


def grad_at(params, x, y):
    model = TinyNet()
    torch.nn.utils.vector_to_parameters(params.clone(), model.parameters())
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    return torch.cat([g.reshape(-1) for g in grads]) + WD * params


@pytest.mark.parametrize("variant", ["lin", "ccl"])
def test_qgm_buffer_after_one_iteration_on_three_agents(variant):
    graph = path3()
    w = torch.tensor(mixing_matrix(graph), dtype=torch.float32)
    assert w[0, 0].item() == pytest.approx(2 / 3) and w[1, 1].item() == pytest.approx(1 / 3)
    agents = make_agents("qgm", graph, OptimConfig(lr=LR, momentum=BETA, nesterov=True, weight_decay=WD),
                         {"variant": variant, "mu": MU})
    x = torch.stack([flat_params(a.ctx.model) for a in agents])
    data = batches(3)
    step_all(agents, 0, data)
    g = torch.stack([grad_at(x[i], *data[i]) for i in range(3)])
    half = x - LR * (g + BETA * g)  # m_hat = 0: m_tmp = g, Nesterov u = g + beta m_tmp
    x_new = w @ half
    expected = (1 - MU) * (x - x_new) / LR if variant == "lin" else g + (half - x_new) / LR
    for i, agent in enumerate(agents):
        torch.testing.assert_close(flat_params(agent.ctx.model), x_new[i], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(agent.buffer.momentum_hat, expected[i], rtol=1e-4, atol=1e-5)


def test_qgm_second_iteration_uses_the_buffer_and_gossip_momentum_mixes_it():
    graph = path3()
    w = torch.tensor(mixing_matrix(graph), dtype=torch.float32)
    agents = make_agents("qgm", graph, OptimConfig(lr=LR, momentum=BETA, nesterov=False, weight_decay=WD),
                         {"gossip_momentum": True})
    x = torch.stack([flat_params(a.ctx.model) for a in agents])
    m_hat = torch.zeros_like(x)
    for round_ in range(2):
        data = batches(3, seed=round_)
        step_all(agents, round_, data)
        g = torch.stack([grad_at(x[i], *data[i]) for i in range(3)])
        half = x - LR * (BETA * m_hat + g)  # heavy ball: u = m_tmp
        x_new = w @ half
        m_hat = MU * (w @ m_hat) + (1 - MU) * (x - x_new) / LR
        x = x_new
    for i, agent in enumerate(agents):
        torch.testing.assert_close(flat_params(agent.ctx.model), x[i], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(agent.buffer.momentum_hat, m_hat[i], rtol=1e-4, atol=1e-5)
    assert agents[1].ctx.exchange.stats.sent_by_tensor["momentum"] == agents[1].ctx.exchange.stats.sent_by_tensor["params"]


def test_class_means_mask_a_class_nobody_has():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    y = torch.tensor([0, 0, 2])
    sums = class_sums(f, y, 4)
    assert sums.tolist() == [[4, 6], [0, 0], [5, 6], [0, 0]]
    counts = class_counts(y, 4)
    neighbour = class_sums(torch.tensor([[10.0, 10.0]]), torch.tensor([1]), 4)
    means, mask = class_means(sums + neighbour, counts + class_counts(torch.tensor([1]), 4))
    assert mask.tolist() == [True, True, True, False]
    assert means.tolist() == [[2, 3], [10, 10], [5, 6], [0, 0]]  # no division by zero for class 3


def test_mix_with_step_gamma_and_absent_neighbours():
    own = torch.tensor([1.0])
    assert mix_with_step(own, {1: torch.tensor([3.0]), 2: torch.tensor([5.0])}, {1: 0.25, 2: 0.25}, 1.0).item() == 2.5
    assert mix_with_step(own, {1: torch.tensor([3.0])}, {1: 0.25, 2: 0.25}, 0.9).item() == pytest.approx(1.45)


def ccl_first_step(options, grad_clip=0.0):
    """Two agents, one class missing on one of them: agent 0 after one CCL step, and its loss terms by hand
    (CE, lambda-weighted alignment) at its mixed model, whose parameters they differentiate."""
    graph = assign_mixing_weights(nx.path_graph(2))
    optim = OptimConfig(lr=LR, momentum=BETA, nesterov=True, weight_decay=WD, grad_clip=grad_clip)
    agents = make_agents("ccl", graph, optim, options, classes=3, seed=0)
    # Different starting models, so that f_i|j differs from f_i.
    torch.manual_seed(5)
    other = TinyNet()
    torch.nn.utils.vector_to_parameters(flat_params(other), agents[1].ctx.model.parameters())
    x0 = [flat_params(a.ctx.model) for a in agents]
    data = [(torch.randn(4, 3), torch.tensor([0, 0, 1, 1])), (torch.randn(4, 3), torch.tensor([1, 1, 1, 1]))]
    step_all(agents, 0, data)

    mixed = 0.5 * x0[0] + 0.5 * x0[1]  # 2-agent path: w = 1/2 everywhere, gamma = 1
    model = TinyNet()
    torch.nn.utils.vector_to_parameters(mixed.clone(), model.parameters())
    # Agent 0's loss by hand: its features, its neighbour's model (= the received x_1 = x0[1]) on its batch.
    neighbour = TinyNet()
    torch.nn.utils.vector_to_parameters(x0[1].clone(), neighbour.parameters())
    x, y = data[0]
    f = model.features(x)
    with torch.no_grad():
        f_cross = neighbour.features(x)
        # Agent 1 sends agent 0 the class sums of ITS batch through the x_0 it received (x0[0]).
        received_by_1 = TinyNet()
        torch.nn.utils.vector_to_parameters(x0[0].clone(), received_by_1.parameters())
        s_from_1 = class_sums(received_by_1.features(data[1][0]), data[1][1], 3)
        sums = class_sums(f.detach(), y, 3) + s_from_1
        counts = class_counts(y, 3) + class_counts(data[1][1], 3)
        targets, mask = class_means(sums, counts)
    assert mask.tolist() == [True, True, False]  # class 2 is on nobody's batch
    ce = F.cross_entropy(model.head(f), y)
    align = options["lambda_m"] * F.mse_loss(f, f_cross) + options["lambda_d"] * F.mse_loss(f, targets[y])
    return agents, model, mixed, ce, align


def flat(grads, params=None):
    """Flattened gradients; an unused parameter (the head, for the alignment terms) counts as zero."""
    params = params or [None] * len(grads)
    return torch.cat([(torch.zeros_like(p) if t is None else t).reshape(-1) for t, p in zip(grads, params)])


def test_ccl_first_iteration_matches_the_hand_written_loss_and_its_gradient():
    """Targets and cross-features carry no gradient."""
    agents, model, mixed, ce, align = ccl_first_step({"lambda_m": 0.3, "lambda_d": 0.2})
    g = flat(torch.autograd.grad(ce + align, list(model.parameters()))) + WD * mixed
    expected = mixed - LR * (g + BETA * g)
    torch.testing.assert_close(flat_params(agents[0].ctx.model), expected, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in agents[0].shadow.parameters())  # no gradient through a neighbour's model


def test_grad_clip_cuts_the_loss_gradient_before_weight_decay_and_momentum():
    options = {"lambda_m": 0.3, "lambda_d": 0.2}
    agents, model, mixed, ce, align = ccl_first_step(options)
    raw = flat(torch.autograd.grad(ce + align, list(model.parameters())))
    clip = 0.25 * float(raw.norm())  # so the clip bites
    agents, model, mixed, ce, align = ccl_first_step(options, grad_clip=clip)
    g = raw * (clip / raw.norm()) + WD * mixed
    torch.testing.assert_close(flat_params(agents[0].ctx.model), mixed - LR * (g + BETA * g), rtol=1e-5, atol=1e-6)


def test_bad_qgm_and_ccl_options_are_user_errors():
    with pytest.raises(UserError, match="variant"):
        parse_algorithm_options("qgm", {"variant": "fast"})
    with pytest.raises(UserError, match="unknown option 'lambda'"):
        parse_algorithm_options("ccl", {"lambda": 1})
    parse_algorithm_options("ccl", {"lambda_m": 0.5, "gamma": 0.9, "variant": "ccl"})
