"""CHOCO-SGD and its compressors: the paper's equations on 3 agents, each operator's properties,
the bytes that really travel, and a short run that learns."""

import json
import math

import networkx as nx
import pytest
import torch

from p2pfl.agents.setup import prepare
from p2pfl.agents.simulate import run_simulation
from p2pfl.registry import parse_algorithm_options
from p2pfl.algorithms.base import flat_params
from p2pfl.algorithms.compressors import QSGD, RandomK, ScaledSign, TopK
from p2pfl.config import OptimConfig
from p2pfl.errors import UserError
from p2pfl.topologies import mixing_matrix
from p2pfl.topologies.mixing import assign_mixing_weights
from tests.conftest import small_config
from tests.helpers import make_agents, step_all
from tests.test_dsgd import batches, reference_grad

SEGMENTS = [6, 2, 6, 3]  # TinyNet: body weight, body bias, head weight, head bias
LR, BETA, WD, GAMMA = 0.1, 0.9, 1e-3, 0.4


def reference_topk(v: torch.Tensor, ratio: float) -> torch.Tensor:
    """Keep the floor(ratio d) (at least 1) entries of largest magnitude of each tensor, by sorting."""
    out, start = torch.zeros_like(v), 0
    for d in SEGMENTS:
        part = v[start:start + d]
        keep = torch.argsort(part.abs(), descending=True)[:max(1, int(ratio * d))]
        out[start + keep] = part[keep]
        start += d
    return out


def reference_sign(v: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.where(p < 0, -1.0, 1.0) * p.abs().sum() / p.numel() for p in torch.split(v, SEGMENTS)])


REFERENCE_Q = {"topk": lambda v: reference_topk(v, 0.5), "sign": reference_sign, "none": lambda v: v}


def path3():
    g = assign_mixing_weights(nx.path_graph(3))  # irregular: Metropolis-Hastings weights
    return g, torch.tensor(mixing_matrix(g), dtype=torch.float32)


@pytest.mark.parametrize("compressor", sorted(REFERENCE_Q))
def test_choco_steps_match_the_paper_on_a_path_graph(compressor):
    """x½ = x - lr(g + beta m); q = Q(x½ - x̂); x̂ += q; x = x½ + gamma (W - I) x̂, three rounds."""
    g, w = path3()
    optim = OptimConfig(lr=LR, momentum=BETA, nesterov=True, weight_decay=WD)
    agents = make_agents("choco", g, optim, {"compressor": compressor, "ratio": 0.5, "gamma": GAMMA})
    x = torch.stack([flat_params(a.ctx.model) for a in agents])
    m, hat = torch.zeros_like(x), torch.zeros_like(x)
    for round_ in range(3):
        data = batches(3, seed=round_)
        step_all(agents, round_, data)
        grads = torch.stack([reference_grad(x[i], *data[i], WD) for i in range(3)])
        m = BETA * m + grads
        half = x - LR * (grads + BETA * m)
        hat = hat + torch.stack([REFERENCE_Q[compressor](half[i] - hat[i]) for i in range(3)])
        x = half + GAMMA * (w @ hat - hat)
        torch.testing.assert_close(torch.stack([flat_params(a.ctx.model) for a in agents]), x, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.stack([a.hat_self for a in agents]), hat, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compressor", ["randomk", "qsgd"])
def test_random_compressors_keep_every_copy_equal_to_its_owner(compressor):
    """Each neighbour's copy x̂_j equals j's own x̂_j exactly, and x moved by gamma sum_j w_ij (x̂_j - x̂_i)."""
    g, w = path3()
    agents = make_agents("choco", g, OptimConfig(lr=LR, momentum=0.0, weight_decay=0.0),
                         {"compressor": compressor, "ratio": 0.3, "levels": 3, "gamma": GAMMA})
    for round_ in range(3):
        before = torch.stack([flat_params(a.ctx.model) for a in agents])
        data = batches(3, seed=round_)
        step_all(agents, round_, data)
        hat = torch.stack([a.hat_self for a in agents])
        for i, agent in enumerate(agents):
            for j, copy in agent.hats.items():
                assert torch.equal(copy, hat[j])
        grads = torch.stack([reference_grad(before[i], *data[i], 0.0) for i in range(3)])
        expected = before - LR * grads + GAMMA * (w @ hat - hat)
        torch.testing.assert_close(torch.stack([flat_params(a.ctx.model) for a in agents]), expected,
                                   rtol=1e-5, atol=1e-6)
    assert not hat.eq(0).all()


def test_no_compression_with_gamma_1_is_dsgdm_n():
    g, _ = path3()
    optim = OptimConfig(lr=LR, momentum=BETA, nesterov=True, weight_decay=WD)
    choco = make_agents("choco", g, optim, {"compressor": "none", "gamma": 1.0})
    dsgd = make_agents("dsgdm-n", g, optim)
    for round_ in range(4):
        data = batches(3, seed=round_)
        step_all(choco, round_, data)
        step_all(dsgd, round_, data)
    torch.testing.assert_close(torch.stack([flat_params(a.ctx.model) for a in choco]),
                               torch.stack([flat_params(a.ctx.model) for a in dsgd]), rtol=1e-5, atol=1e-6)


def test_topk_keeps_exactly_the_k_largest_of_each_tensor():
    x = torch.randn(sum(SEGMENTS), generator=torch.Generator().manual_seed(1))
    payload = TopK(SEGMENTS, 0.5).encode(x, 0)
    assert payload["indices"].dtype == torch.int32 and payload["indices"].shape == (3 + 1 + 3 + 1,)
    q = TopK(SEGMENTS, 0.5).decode(payload)
    assert torch.equal(q, reference_topk(x, 0.5))
    assert int((q != 0).sum()) == 8


def test_scaled_sign_keeps_each_tensors_l1_norm_and_signs():
    x = torch.randn(sum(SEGMENTS), generator=torch.Generator().manual_seed(2))
    payload = ScaledSign(SEGMENTS).encode(x, 0)
    assert payload["negative"].dtype == torch.uint8 and payload["negative"].numel() == math.ceil(17 / 8)
    q = ScaledSign(SEGMENTS).decode(payload)
    for part, orig in zip(torch.split(q, SEGMENTS), torch.split(x, SEGMENTS)):
        torch.testing.assert_close(part.abs().sum(), orig.abs().sum())
        assert torch.equal(part.sign(), orig.sign()) and torch.allclose(part.abs(), part.abs()[0].expand_as(part))


def test_qsgd_is_unbiased_in_expectation_and_rescaled_by_tau_for_choco():
    segments = [40, 9]
    x = torch.randn(49, generator=torch.Generator().manual_seed(3))
    unbiased, rescaled = QSGD(segments, 4, seed=0, rescale=False), QSGD(segments, 4, seed=0)
    draws = torch.stack([unbiased.decode(unbiased.encode(x, r)) for r in range(4000)])
    torch.testing.assert_close(draws.mean(0), x, atol=0.05, rtol=0)
    levels = draws.abs() / torch.cat([p.norm().expand(d) for p, d in zip(torch.split(x, segments), segments)]) * 4
    assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.max() <= 4 + 1e-4
    tau = torch.tensor([1 + min(40 / 16, math.sqrt(40) / 4)] * 40 + [1 + min(9 / 16, 3 / 4)] * 9)
    torch.testing.assert_close(rescaled.decode(rescaled.encode(x, 7)), unbiased.decode(unbiased.encode(x, 7)) / tau)


def test_randomk_is_reproducible_and_rebuilt_from_the_indices_alone():
    x = torch.randn(sum(SEGMENTS))
    a, b = RandomK(SEGMENTS, 0.5, seed=4).encode(x, 9), RandomK(SEGMENTS, 0.5, seed=4).encode(x, 9)
    assert torch.equal(a["indices"], b["indices"])
    assert not torch.equal(a["indices"], RandomK(SEGMENTS, 0.5, seed=4).encode(x, 10)["indices"])
    q = RandomK(SEGMENTS, 0.5, seed=99).decode(a)  # another agent's seed: the receiver's own does not matter
    kept = a["indices"].long()
    assert torch.equal(q[kept], x[kept]) and int((q != 0).sum()) == 8


def test_a_bad_index_or_a_missed_round_leaves_that_neighbour_out_of_the_mixing():
    with pytest.raises(ValueError, match="out of range"):
        TopK(SEGMENTS, 0.5).decode({"indices": torch.tensor([17] * 8, dtype=torch.int32), "values": torch.ones(8)})
    g = nx.complete_graph(3)
    # 3 s: the agents that do step must hear each other even on a loaded machine; only round 1 waits it
    # out for agent 2 (then marked down, round 2 does not wait for it).
    agents = make_agents("choco", assign_mixing_weights(g), OptimConfig(lr=LR), {"compressor": "none", "gamma": 1.0},
                         timeout=3.0)
    step_all(agents, 0, batches(3))
    step_all(agents[:2], 1, batches(2, seed=1))  # agent 2 misses round 1
    assert [a.stale for a in agents[:2]] == [{2}, {2}]
    before = [flat_params(a.ctx.model) for a in agents[:2]]
    step_all(agents[:2], 2, batches(2, seed=2))
    assert agents[0].stale == {2}  # agent 2 answered nothing: its copy stays out; 0 and 1 still mix
    assert not torch.equal(flat_params(agents[0].ctx.model), before[0])


def test_a_checkpoint_keeps_the_copies_and_a_resumed_agent_mixes_with_nobody(tmp_path):
    g = assign_mixing_weights(nx.complete_graph(3))
    options = {"compressor": "topk", "ratio": 0.5}
    agents = make_agents("choco", g, OptimConfig(lr=LR), options)
    step_all(agents, 0, batches(3))
    torch.save(agents[0].state_dict(), tmp_path / "state.pt")
    fresh = make_agents("choco", g, OptimConfig(lr=LR), options)[0]
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert torch.equal(fresh.hats[2], agents[2].hat_self) and fresh.next_round == 1
    step_all(agents, 2, batches(3, seed=2))  # round 1 missed by everyone, as after a restart
    assert [a.stale for a in agents] == [{1, 2}, {0, 2}, {0, 1}]


@pytest.mark.parametrize("options,message", [
    ({"compressor": "zip"}, "options.compressor must be one of topk, randomk, sign, qsgd, none"),
    ({"gamma": 0.0}, "options.gamma"), ({"ratio": 1.5}, "options.ratio"), ({"levels": 300}, "options.levels"),
    ({"rate": 0.1}, "unknown option 'rate'")])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(UserError, match=message):
        parse_algorithm_options("choco", options)


def run(tmp_path, algorithm, options, rounds=3, **changes):
    config = small_config(agents=4, rounds=rounds, algorithm=algorithm, options=options, **changes)
    run_simulation(prepare(config), tmp_path)
    return [[json.loads(line) for line in (tmp_path / "agents" / f"{a:03d}" / "metrics.jsonl").read_text().splitlines()]
            for a in range(4)]


def test_bytes_per_round_shrink_by_the_compression_factor(tmp_path):
    """Ring of 4, digits MLP (17,226 parameters in 6 tensors): what each message really carries."""
    sizes = [8 * 8 * 128, 128, 128 * 64, 64, 64 * 10, 10]
    dense, k = sum(sizes) * 4, sum(max(1, int(0.1 * d)) for d in sizes)
    expected = {  # payload bytes per neighbour, headers excluded
        "none": {"q": dense},
        "topk": {"indices": 4 * k, "values": 4 * k},
        "sign": {"negative": math.ceil(sum(sizes) / 8), "scales": 4 * 6},
        "qsgd": {"norms": 4 * 6, "negative": math.ceil(sum(sizes) / 8), "levels": math.ceil(sum(sizes) * 4 / 8)},
    }
    sent = {}
    for name, tensors in expected.items():
        rows = run(tmp_path / name, "choco", {"compressor": name, "ratio": 0.1, "levels": 15})
        row = rows[1][-1]
        assert row["bytes_by_tensor"] == {t: 2 * b for t, b in tensors.items()}  # two neighbours on a ring
        sent[name] = row["bytes_sent"]
    baseline = run(tmp_path / "dsgd", "dsgdm-n", {})[1][-1]["bytes_sent"]
    assert sent["none"] == pytest.approx(baseline, rel=0.01)
    assert sent["topk"] / baseline == pytest.approx(0.2, rel=0.02)  # 10% kept, 8 bytes each instead of 4
    assert sent["sign"] / baseline == pytest.approx(1 / 32, rel=0.1)
    assert sent["qsgd"] / baseline == pytest.approx(5 / 32, rel=0.05)  # 1 sign bit + 4 level bits (s = 15)


def test_a_short_digits_run_learns(tmp_path):
    rows = run(tmp_path, "choco", {"compressor": "topk", "ratio": 0.1, "gamma": 0.5}, rounds=150,
               data__partition="iid", optim__lr=0.05)
    accuracy = [r[-1]["test_accuracy"] for r in rows]
    assert min(accuracy) > 0.6, accuracy  # 10 classes: chance is 0.1


def test_choco_refuses_a_topology_that_changes_per_round():
    """Its public copies are per neighbour: a neighbour of one round only would leave a stale copy."""
    from tests.conftest import small_config

    config = small_config(agents=4, rounds=2)
    config.algorithm, config.topology.kind = "choco", "random-matching"
    with pytest.raises(UserError, match="needs a fixed graph"):
        prepare(config)
