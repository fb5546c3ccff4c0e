import torch
import torch.nn.functional as F

from p2pfl.algorithms.base import flat_params, gossip_average, learning_rate
from p2pfl.config import OptimConfig
from p2pfl.topologies import mixing_matrix
from tests.helpers import TinyNet, graph, make_agents, step_all


def batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(n)]


def reference_grad(params, x, y, wd):
    model = TinyNet()
    torch.nn.utils.vector_to_parameters(params.clone(), model.parameters())
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return torch.cat([g.reshape(-1) for g in grads]) + wd * params


def test_dsgdm_n_two_rounds_match_the_equations_on_a_path_graph():
    import networkx as nx
    from p2pfl.topologies.mixing import assign_mixing_weights

    g = assign_mixing_weights(nx.path_graph(3))  # irregular: Metropolis-Hastings weights
    w = torch.tensor(mixing_matrix(g), dtype=torch.float32)
    optim = OptimConfig(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    agents = make_agents("dsgdm-n", g, optim)
    x = torch.stack([flat_params(a.ctx.model) for a in agents])
    m = torch.zeros_like(x)
    for round_ in range(2):
        data = batches(3, seed=round_)
        step_all(agents, round_, data)
        grads = torch.stack([reference_grad(x[i], *data[i], 1e-3) for i in range(3)])
        m = 0.9 * m + grads
        half = x - 0.1 * (grads + 0.9 * m)
        x = w @ half
        got = torch.stack([flat_params(a.ctx.model) for a in agents])
        torch.testing.assert_close(got, x, rtol=1e-5, atol=1e-6)


def test_plain_dpsgd_preserves_the_average_step():
    """Doubly stochastic mixing: the mean of x moves by exactly -lr * mean gradient."""
    g = graph("ring", 5)
    optim = OptimConfig(lr=0.05, momentum=0.9, weight_decay=0.0)
    agents = make_agents("dpsgd", g, optim)
    x = torch.stack([flat_params(a.ctx.model) for a in agents])
    data = batches(5)
    step_all(agents, 0, data)
    grads = torch.stack([reference_grad(x[i], *data[i], 0.0) for i in range(5)])
    got = torch.stack([flat_params(a.ctx.model) for a in agents])
    torch.testing.assert_close(got.mean(0), (x - 0.05 * grads).mean(0), rtol=1e-5, atol=1e-6)


def test_gossip_average_renormalises_over_the_neighbours_that_answered():
    own = torch.tensor([0.0])
    out = gossip_average(own, {2: torch.tensor([3.0])}, {1: 0.25, 2: 0.25}, 0.5)
    assert out.item() == 1.0  # (0.5*0 + 0.25*3) / 0.75
    full = gossip_average(own, {1: torch.tensor([1.0]), 2: torch.tensor([3.0])}, {1: 0.25, 2: 0.25}, 0.5)
    assert full.item() == 1.0


def test_gossip_average_rounds_each_term_before_adding_it_and_leaves_its_inputs_alone():
    """The floats of `own * w_ii + w_1 * x_1 + ...` evaluated left to right, each product rounded before it is
    added. A fused multiply-add (torch's add_(x, alpha=w) on this CPU) rounds once and gives other floats,
    which the golden records would catch only for the settings they pin."""
    generator = torch.Generator().manual_seed(0)
    own = torch.randn(4099, generator=generator) * 1e3
    received = {peer: torch.randn(4099, generator=generator) * scale for peer, scale in ((3, 1e-3), (1, 1.0), (2, 1e3))}
    copies = {peer: vector.clone() for peer, vector in received.items()}
    weights = {1: 2 / 7, 2: 1 / 9, 3: 0.1234567}
    expected = own * (1 / 3)
    for peer in (1, 2, 3):
        expected = expected + weights[peer] * received[peer]
    mass = 1 / 3 + sum(weights.values())
    assert torch.equal(gossip_average(own, received, weights, 1 / 3), expected / mass)
    assert all(torch.equal(received[peer], copies[peer]) for peer in received)
    assert torch.equal(gossip_average(own, {}, weights, 1.0), own)


def test_learning_rate_schedules():
    step = OptimConfig(lr=0.1, schedule="step")
    assert [round(learning_rate(step, r, 100, 4), 6) for r in (0, 49, 50, 74, 75)] == [0.1, 0.1, 0.01, 0.01, 0.001]
    warm = OptimConfig(lr=0.1, schedule="warmup", warmup_rounds=10, scale_lr_by_agents=True)
    assert learning_rate(warm, 0, 100, 4) == 0.1
    assert abs(learning_rate(warm, 5, 100, 4) - 0.25) < 1e-12
    assert abs(learning_rate(warm, 20, 100, 4) - 0.4) < 1e-12
    assert learning_rate(OptimConfig(lr=0.1), 99, 100, 4) == 0.1
