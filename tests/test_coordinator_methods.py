"""CP-CFL, FedTSDP, multi-task and CLoVE's unsupervised variant: their math by hand, then in-process runs."""

import math

import numpy as np
import pytest
import torch

from p2pfl.agents.federated import summarize_federated
from p2pfl.agents.methods.fedtsdp import personal_mask
from p2pfl.agents.setup import prepare
from p2pfl.agents.simulate import run_simulation
from p2pfl.algorithms.contrastive import augment, nt_xent
from p2pfl.algorithms.fedtsdp import (hopkins, hopkins_once, js_divergence, pairwise_js, personalization_layers,
                                      stage1_groups, stage2_split, two_stage_clusters)
from p2pfl.algorithms.federated import group_average
from p2pfl.algorithms.multitask import proximal_term, sharing_groups
from p2pfl.config import load_config
from p2pfl.validation import validate_config
from p2pfl.errors import UserError
from p2pfl.models.mlp import MLP
from tests.conftest import ROOT


# -- NT-Xent and augmentations -------------------------------------------------------------
def test_nt_xent_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # each view: its positive at cos 1, the two others at cos 0; tau = 0.5
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert float(nt_xent(z, z.clone(), 0.5)) == pytest.approx(expected)
    # one pair: the positive is the only other view, so the loss is exactly 0
    assert float(nt_xent(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]]))) == pytest.approx(0.0)
    # the loss falls as the positives align
    a, b = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.randn(8, 4)
    assert float(nt_xent(a, a + 0.01 * b)) < float(nt_xent(a, b))


def test_augment_shifts_without_rotating_and_erases_rectangles():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 1, 8, 8) + 1
    shifted = augment(x, g, max_shift=1, noise=0.0, erase_probability=0.0)
    for i in range(2):
        padded = torch.nn.functional.pad(x[i], (1, 1, 1, 1))
        assert any(torch.equal(shifted[i], padded[:, dy:dy + 8, dx:dx + 8]) for dy in range(3) for dx in range(3))
    erased = augment(x, g, max_shift=0, noise=0.0, erase_probability=1.0)
    assert all(int((erased[i] == 0).sum()) >= 4 for i in range(2)) and (x != 0).all()
    noisy = augment(x, g, max_shift=0, noise=0.1, erase_probability=0.0)
    assert 0 < float((noisy - x).std()) < 0.2


# -- FedTSDP -------------------------------------------------------------------------------
def test_hopkins_one_draw_by_hand():
    points = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    # w: nearest other point of points 0 and 2 is 1 away; u: (5,0) and (5,1) are 5 away from any point
    h = hopkins_once(points, np.array([0, 2]), np.array([[5.0, 0.0], [5.0, 1.0]]))
    assert h == pytest.approx((25 + 25) / (25 + 25 + 1 + 1))


def test_hopkins_is_near_half_on_uniform_data_and_high_on_clusters():
    rng = np.random.default_rng(0)
    uniform = [hopkins(rng.uniform(0, 1, (60, 2)), rng) for _ in range(10)]
    assert 0.4 < np.mean(uniform) < 0.6
    blobs = np.concatenate([rng.normal(c, 0.02, (15, 2)) for c in ([0, 0], [1, 0], [0, 1], [1, 1])])
    assert hopkins(blobs, rng) > 0.9


def test_jensen_shannon_by_hand():
    assert float(js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0]))) == pytest.approx(1.0)
    assert float(js_divergence(np.array([0.3, 0.7]), np.array([0.3, 0.7]))) == pytest.approx(0.0)
    # m = (0.75, 0.25): KL(p||m) = 0.5 log2(2/3) + 0.5 log2 2, KL(q||m) = log2(4/3)
    expected = (0.5 * math.log2(2 / 3) + 0.5 + math.log2(4 / 3)) / 2
    assert float(js_divergence(np.array([0.5, 0.5]), np.array([1.0, 0.0]))) == pytest.approx(expected)
    outputs = np.array([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]])
    assert pairwise_js(outputs).tolist() == [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]


def test_two_stages_group_by_outputs_then_split_by_update_direction():
    distance = np.array([[0, .1, .9, .9], [.1, 0, .9, .9], [.9, .9, 0, .1], [.9, .9, .1, 0]])
    groups = stage1_groups(distance, 0.5)
    assert groups[0] == groups[1] != groups[2] == groups[3]
    opposite = np.array([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]])
    split = stage2_split(opposite, ratio=0.5, min_size=4)
    assert split[0] == split[1] != split[2] == split[3]
    assert stage2_split(np.abs(opposite), 0.5, 4).tolist() == [0, 0, 0, 0]  # aligned: stays whole
    assert stage2_split(opposite[:3], 0.5, 4).tolist() == [0, 0, 0]  # too small to split
    # Two directions 60 degrees apart: within-half cosine 1, cross-half 0.5; kept only when 0.5 < ratio * 1.
    sixty = np.array([[1.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2], [0.5, np.sqrt(3) / 2]])
    assert stage2_split(sixty, 0.4, 4).tolist() == [0, 0, 0, 0]
    assert len(set(stage2_split(sixty, 0.6, 4).tolist())) == 2
    outputs = np.array([[[1.0, 0.0]]] * 4 + [[[0.0, 1.0]]] * 4)
    updates = np.concatenate([np.abs(opposite), opposite])
    assert len(set(two_stage_clusters(pairwise_js(outputs), updates, 0.5, 0.5, 4).tolist())) == 3


def test_within_and_across_cluster_means_by_hand():
    from p2pfl.algorithms.fedtsdp import within_and_across

    matrix = np.array([[0.0, 0.1, 0.8], [0.1, 0.0, 0.6], [0.8, 0.6, 0.0]])
    assert within_and_across(matrix, np.array([0, 0, 1])) == pytest.approx((0.1, 0.7))


def test_personalization_layers_grow_with_skew_and_mask_the_top_layers():
    assert [personalization_layers(h, 4) for h in (0.3, 0.5, 0.75, 1.0)] == [1, 1, 2, 4]
    model = MLP((1, 8, 8), 10)  # layers 64->128, 128->64, 64->10
    assert int(personal_mask(model, 1).sum()) == 64 * 10 + 10
    assert int(personal_mask(model, 2).sum()) == 64 * 10 + 10 + 128 * 64 + 64
    assert bool(personal_mask(model, 1)[-1]) and not bool(personal_mask(model, 1)[0])


# -- multi-task ----------------------------------------------------------------------------
def test_proximal_term_and_its_gradient_by_hand():
    decoder = [torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([3.0], requires_grad=True)]
    value = proximal_term(decoder, torch.tensor([0.0, 0.0, 1.0]), mu=0.1)
    assert float(value.detach()) == pytest.approx(0.05 * (1 + 4 + 4))
    value.backward()
    assert decoder[0].grad.tolist() == pytest.approx([0.1, 0.2]) and decoder[1].grad.tolist() == pytest.approx([0.2])


def test_encoder_is_averaged_over_all_tasks_and_decoders_within_each_task():
    tasks = {1: 0, 2: 0, 3: 1}
    vectors = {1: torch.tensor([0.0]), 2: torch.tensor([3.0]), 3: torch.tensor([6.0])}
    sizes = {1: 1.0, 2: 2.0, 3: 3.0}
    encoder_group, decoder_group = sharing_groups(tasks, "mfed")
    assert group_average(vectors, encoder_group, sizes)["all"].tolist() == [4.0]  # (0 + 6 + 18) / 6
    per_task = group_average(vectors, decoder_group, sizes)
    assert per_task[0].tolist() == [2.0] and per_task[1].tolist() == [6.0]
    encoder_group, _ = sharing_groups(tasks, "per-task")
    assert group_average(vectors, encoder_group, sizes)[0].tolist() == [2.0]
    assert sharing_groups(tasks, "local")[0] == {1: 1, 2: 2, 3: 3}


# -- runs ----------------------------------------------------------------------------------
def config_for(algorithm, rounds=5, model=None, **options):
    config = load_config(ROOT / "examples" / "clove_rotated.yaml")
    config.algorithm, config.rounds = algorithm, rounds
    if model:
        config.model = model
    config.options.update(options)
    return config


def run_sim(config, tmp_path):
    run_simulation(prepare(config), tmp_path)
    return summarize_federated(config, tmp_path)


def cpcfl_models_after_pretraining(init):
    """CP-CFL's K cluster models right after federated pre-training, before their first cluster round."""
    from p2pfl.agents.methods.base import CoordinatorContext
    from p2pfl.agents.methods.cpcfl import CPCFLCoordinator
    from p2pfl.registry import parse_algorithm_options
    from p2pfl.data import load_dataset
    from p2pfl.models.initial import initial_model

    config = config_for("cpcfl", init=init, pretrain_rounds=2)
    options = parse_algorithm_options("cpcfl", config.options)
    clients = list(range(1, config.agents))
    coordinator = CPCFLCoordinator(CoordinatorContext(config, load_dataset("digits"), options, clients,
                                                      {c: 0 for c in clients}))
    encoder = torch.randn(len(coordinator.encoder), generator=torch.Generator().manual_seed(1))
    coordinator.absorb("pretrain", 1, {1: {"encoder": encoder, "n": torch.tensor([10.0]),
                                           "loss": torch.tensor([1.0])}}, {})  # the last pre-training round
    body = sum(p.numel() for p in initial_model(config, coordinator.ctx.dataset).body.parameters())
    return coordinator.models, encoder, body  # body: how many leading parameters are the encoder


def test_cpcfl_from_identical_models_starts_the_k_models_equal_and_ties_like_ifca(tmp_path):
    models, encoder, body = cpcfl_models_after_pretraining("identical")
    assert all(torch.equal(m, models[0]) for m in models[1:])  # one head for all: init identical
    assert torch.equal(models[0][:body], encoder[:body])  # on the pre-trained encoder
    models, _, _ = cpcfl_models_after_pretraining("random")
    assert all(torch.equal(m[:body], encoder[:body]) for m in models)  # random: the same encoder,
    assert all(not torch.equal(m[body:], models[0][body:]) for m in models[1:])  # a head each
    # Equal models tie on every client's loss: all pick the first, as IFCA from identical models.
    summary = run_sim(config_for("cpcfl", rounds=1, init="identical", pretrain_rounds=1, local_epochs=1), tmp_path)
    assert summary["round0_collapse_share"] == 1.0 and summary["ari_per_round"][0] == 0.0


def test_cpcfl_with_a_head_per_model_finds_the_clusters_where_ifca_from_identical_models_collapses(tmp_path):
    cpcfl = run_sim(config_for("cpcfl", init="random", pretrain_rounds=3), tmp_path / "cpcfl")
    ifca = run_sim(config_for("ifca", init="identical"), tmp_path / "ifca")
    assert len(cpcfl["pretrain_loss_per_round"]) == 3
    assert cpcfl["pretrain_loss_per_round"][-1] < cpcfl["pretrain_loss_per_round"][0]
    assert ifca["round0_collapse_share"] == 1.0 and cpcfl["round0_collapse_share"] < 1.0
    # IFCA keeps every client on one model (ARI 0); CP-CFL separates clusters (at this seed it merges two of four)
    assert ifca["final_ari"] == 0.0 and cpcfl["final_ari"] > 0.6
    assert cpcfl["final_accuracy"] > ifca["final_accuracy"] + 0.1


def test_cpcfl_pretraining_on_the_coordinator_needs_no_pretrain_rounds(tmp_path):
    summary = run_sim(config_for("cpcfl", rounds=4, pretrain_mode="coordinator", pretrain_rounds=2), tmp_path)
    assert "pretrain_loss_per_round" not in summary and len(summary["accuracy_per_round"]) == 5
    assert summary["final_ari"] == 1.0


def test_fedtsdp_labels_every_client_when_it_clusters_not_only_that_rounds_participants():
    from p2pfl.agents.methods.base import CoordinatorContext
    from p2pfl.agents.methods.fedtsdp import FedTSDPCoordinator
    from p2pfl.registry import parse_algorithm_options
    from p2pfl.data import load_dataset

    config = config_for("fedtsdp", warmup_rounds=2, hopkins_patience=1, public_samples=10)
    config.agents = 10
    options = parse_algorithm_options("fedtsdp", config.options)
    truth = {c: 0 if c <= 4 else 1 for c in range(1, 10)}  # 1-4 one cluster, 5-9 the other
    coordinator = FedTSDPCoordinator(CoordinatorContext(config, load_dataset("digits"), options, list(truth), truth))
    rng = np.random.default_rng(0)

    def train(round_, clients):
        """One train phase: each client's outputs peak on its cluster's class (0 or 1), a little noise."""
        coordinator.request("train", round_, clients)
        replies = {}
        for c in clients:
            logits = rng.normal(0, 0.1, (10, 10))
            logits[:, truth[c]] += 4.0
            signature = torch.softmax(torch.tensor(logits, dtype=torch.float32), dim=1)
            model = coordinator.sent[c] + 0.01 * torch.randn(len(coordinator.sent[c]))
            replies[c] = {"model": model, "n": torch.tensor([10.0]), "signature": signature,
                          "accuracy": torch.tensor([0.5])}
        record = {}
        coordinator.absorb("train", round_, replies, record)
        return record

    train(0, [4, 8, 1])  # warm-up: 4 and 8 leave a signature; 9 never trains before the clustering
    record = train(1, [1, 2, 3, 5, 6, 7])
    assert record.get("clustered_now") and sorted(coordinator.cluster_of) == list(range(1, 10))
    a, b = coordinator.cluster_of[1], coordinator.cluster_of[5]
    assert a != b and [coordinator.cluster_of[c] for c in (2, 3, 6, 7)] == [a, a, b, b]
    assert coordinator.cluster_of[4] == a and coordinator.cluster_of[8] == b  # by their latest signature
    assert coordinator.provisional == {4, 8, 9}  # 9 sits in the largest cluster until it trains
    train(2, [9, 1, 5])
    assert coordinator.cluster_of[9] == b and coordinator.provisional == {4, 8}  # its own outputs now
    restored = FedTSDPCoordinator(CoordinatorContext(config, load_dataset("digits"), options, list(truth), truth))
    restored.load_state_dict(coordinator.state_dict())
    assert restored.provisional == {4, 8} and restored.nearest(coordinator.signature_of[8]) == b


def test_fedtsdp_clusters_only_when_hopkins_finds_structure(tmp_path):
    clustered = run_sim(config_for("fedtsdp", rounds=5, cluster_kind="label-swap"), tmp_path / "swap")
    iid = run_sim(config_for("fedtsdp", rounds=5, clusters=1), tmp_path / "iid")
    assert min(clustered["hopkins_per_round"]) > 0.75 and clustered["final_ari"] == 1.0
    assert clustered["clusters_per_round"][-1] == 4 and clustered["personal_layers_per_round"][-1] == 2
    assert max(iid["hopkins_per_round"]) < 0.75 and iid["clusters_per_round"][-1] == 1
    assert iid["personal_layers_per_round"][-1] == 1


def test_multitask_shared_encoder_helps_low_data_clients(tmp_path):
    def run(sharing):
        config = config_for("mtl", rounds=8, sharing=sharing, samples_per_client=[0, 8])
        config.agents = 11
        return run_sim(config, tmp_path / sharing)["final_accuracy_by_task"]

    mfed, per_task, local = run("mfed"), run("per-task"), run("local")
    assert mfed["parity-size"] > local["parity-size"]
    assert mfed["parity-size"] > per_task["parity-size"]


def test_unsupervised_clove_recovers_one_class_clusters_from_autoencoder_losses(tmp_path):
    config = config_for("clove", rounds=3, model="autoencoder", cluster_kind="label-groups", clusters=10, models=10)
    summary = run_sim(config, tmp_path)
    assert summary["metric"] == "reconstruction MSE" and summary["final_ari"] == 1.0
    assert summary["accuracy_per_round"][-1] < summary["accuracy_per_round"][0]  # reconstruction error falls


def test_bad_options_are_clear_errors():
    for algorithm, options, message in [("mtl", {"tasks": ["digit", "nope"]}, "options.tasks"),
                                        ("mtl", {"decoders": ["linear"]}, "options.decoders"),
                                        ("cpcfl", {"pretrain_mode": "cloud"}, "pretrain_mode"),
                                        ("fedtsdp", {"p_max": 0}, "p_max"),
                                        ("fedtsdp", {"sqrt_losses": True}, "unknown option")]:
        config = config_for(algorithm)
        config.options.update(options)
        with pytest.raises(UserError, match=message):
            validate_config(config)
    config = config_for("dsgdm-n", model="autoencoder")
    with pytest.raises(UserError, match="autoencoder"):
        validate_config(config)


def test_clients_wait_for_the_coordinator_longer_than_it_waits_for_them():
    from p2pfl.registry import parse_algorithm_options
    from p2pfl.algorithms.method_options import COORDINATOR_PATIENCE

    patience = parse_algorithm_options("clove", {"client_timeout": 5.0}).coordinator_timeout
    assert patience == COORDINATOR_PATIENCE * 5.0
    given = parse_algorithm_options("ifca", {"client_timeout": 5.0, "coordinator_timeout": 7.5})
    assert given.coordinator_timeout == 7.5
    with pytest.raises(UserError, match="coordinator_timeout .* must be greater than options.client_timeout"):
        parse_algorithm_options("clove", {"client_timeout": 5.0, "coordinator_timeout": 5.0})
    with pytest.raises(UserError, match="client_timeout must be > 0"):
        parse_algorithm_options("clove", {"client_timeout": 0.0})


def test_frozen_clove_assigns_a_new_client_to_the_nearest_centroid():
    from p2pfl.agents.methods.base import CoordinatorContext
    from p2pfl.agents.methods.clustered import CLoVECoordinator
    from p2pfl.registry import parse_algorithm_options
    from p2pfl.data import load_dataset

    config = config_for("clove", models=3, clusters=3, patience=1)
    config.agents = 8
    options = parse_algorithm_options("clove", config.options)
    coordinator = CLoVECoordinator(CoordinatorContext(config, load_dataset("digits"), options,
                                                      list(range(1, 8)), {c: 0 for c in range(1, 8)}))
    centers = np.array([[0.1, 2.0, 2.0], [2.0, 0.1, 2.0], [2.0, 2.0, 0.1]])
    known = {c: centers[(c - 1) % 3] + 0.01 * c for c in range(1, 7)}
    coordinator.assign(0, known)  # random first round
    for round_ in (1, 2, 3):
        chosen = coordinator.assign(round_, known)
        coordinator.assignment.update(chosen)
        coordinator.stability.update(chosen)
    assert coordinator.stability.frozen
    newcomer = coordinator.assign(4, {**known, 7: centers[2] + 0.05})
    assert {c: newcomer[c] for c in known} == chosen  # the frozen clients keep their models
    assert newcomer[7] == chosen[3]  # client 3 holds cluster 2's data, like the newcomer


@pytest.mark.parametrize("example", ["clove_rotated.yaml", "cpcfl_rotated.yaml", "fedtsdp_label_swap.yaml",
                                     "mtl_digits.yaml"])
def test_partial_participation_asks_half_the_clients_each_round_and_everyone_at_the_end(tmp_path, example):
    import json

    config = load_config(ROOT / "examples" / example)
    config.rounds = 3
    config.options.update(participation=0.5, local_epochs=1)
    if config.algorithm == "cpcfl":
        config.options["pretrain_rounds"] = 1
    run_simulation(prepare(config), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "agents" / "000" / "metrics.jsonl").open()]
    assert [len(r["participants"]) for r in rows] == [10] * (len(rows) - 1) + [20]
    assert len({tuple(r["participants"]) for r in rows[:-1]}) > 1  # a fresh sample every round
    assert all(r["absent"] == [] for r in rows)
    for r in rows:
        if "assignment" in r:  # only those asked are assigned
            assert sorted(map(int, r["assignment"])) == r["participants"]


class LateClients:
    """The coordinator's exchange with the race between its timely clients and client_timeout taken out.

    Each phase it first collects the timely clients' replies with no practical deadline, then gives the
    clients in `late` the real client_timeout. On a loaded machine a timely client can take longer than a
    short timeout; here only a late one can miss it, so the test holds however slow the machine is.
    `gave_up(client, round, tag)` runs when a late client missed its deadline."""

    def __init__(self, inner, late: set, gave_up=lambda client, round_, tag: None):
        self.inner, self.late, self.gave_up = inner, late, gave_up

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def collect(self, round, tag, peers, *, expect=None, timeout=None):
        late = set(peers) & self.late
        got = self.inner.collect(round, tag, set(peers) - late, expect=expect, timeout=600.0)
        if late:
            got.update(self.inner.collect(round, tag, late, expect=expect, timeout=timeout))
            for client in sorted(late - got.keys()):
                self.gave_up(client, round, tag)
        return dict(sorted(got.items()))


def run_in_threads(config, setup, tmp_path, wrap_coordinator, clients):
    """The coordinator in this thread, each client loop in its own; the coordinator's records and what
    each client thread raised (nothing, when every client finished the run)."""
    from p2pfl.agents.federated import CoordinatorLoop
    from tests.helpers import loops_in_threads

    threads, errors = loops_in_threads(clients)
    coordinator = CoordinatorLoop(config, setup.dataset, wrap_coordinator, tmp_path)
    rows = coordinator.run()
    return rows, threads, errors


def endpoints_of(setup, agents):
    from p2pfl.exchange import InMemoryHub

    hub = InMemoryHub()
    return {a: hub.endpoint(a, setup.graph[a], setup.run_id, 5.0) for a in range(agents)}


def test_a_silent_client_is_absent_for_the_round_and_the_run_goes_on(tmp_path):
    import threading

    from p2pfl.agents.agent import Stopped
    from p2pfl.agents.federated import ClientLoop

    # The coordinator is never silent here: the clients' patience only has to outlast its waits.
    config = config_for("clove", rounds=3, client_timeout=1.0, coordinator_timeout=300.0)
    config.agents = 9
    setup = prepare(config)
    endpoints = endpoints_of(setup, 9)
    silent = 4  # up and asked every round, but hung: it never answers (a hung peer)
    finished = threading.Event()
    clients = [ClientLoop(config, a, setup.dataset, endpoints[a], tmp_path) for a in range(1, 9)]

    def hang(tag, round_, payload):
        finished.wait(600)
        raise Stopped("the test is over")

    clients[silent - 1].method.handle = hang
    rows, threads, errors = run_in_threads(config, setup, tmp_path, LateClients(endpoints[0], {silent}), clients)
    finished.set()
    for t in threads:
        t.join(60)
    assert all(r["absent"] == [silent] for r in rows)
    assert all(str(silent) not in r["assignment"] and len(r["assignment"]) == 7 for r in rows)
    assert set(errors) == {silent} and isinstance(errors[silent], Stopped)  # the others finished the run
    summary = summarize_federated(config, tmp_path)
    assert summary["absent"] == [silent] and summary["final_accuracy"] > 0.5


def test_a_client_slower_than_client_timeout_misses_that_round_and_nobody_quits(tmp_path):
    """Participation 0.5: while the coordinator waits client_timeout for a slow client, those sitting the
    round out wait for its next request. The slow reply comes after the coordinator gave up on it: it is
    dropped as stale, and the slow client answers the next round it is asked."""
    import threading

    from p2pfl.agents.federated import ClientLoop, CoordinatorLoop

    config = config_for("clove", rounds=4, participation=0.5, local_epochs=1, client_timeout=1.0,
                        coordinator_timeout=300.0)
    config.agents = 9
    setup = prepare(config)
    endpoints = endpoints_of(setup, 9)
    probe = CoordinatorLoop(config, setup.dataset, endpoints[0], tmp_path)
    slow = probe.participants(0)[0]  # the same seeded sample the coordinator will draw in round 0
    released, sent = threading.Event(), threading.Event()
    clients = [ClientLoop(config, a, setup.dataset, endpoints[a], tmp_path) for a in range(1, 9)]
    loop = clients[slow - 1]
    handle, send = loop.method.handle, endpoints[slow].send

    def slow_handle(tag, round_, payload):  # its first reply (round 0) is held until the coordinator gave up
        reply = handle(tag, round_, payload)
        if not released.is_set():
            released.wait(600)
        return reply

    def send_and_tell(round_, tag, outbox, **flags):
        send(round_, tag, outbox, **flags)
        if released.is_set():  # the held reply is in the coordinator's mailbox
            sent.set()

    loop.method.handle = slow_handle
    endpoints[slow].send = send_and_tell
    late = {slow}

    def gave_up(client, round_, tag):  # it is late this once; its stale reply is on the way before we go on
        late.discard(client)
        released.set()
        assert sent.wait(600)

    rows, threads, errors = run_in_threads(config, setup, tmp_path, LateClients(endpoints[0], late, gave_up), clients)
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)  # nobody quit, every client finished
    assert [r["round"] for r in rows] == list(range(5))  # four rounds and the final evaluation
    assert slow in rows[0]["participants"] and rows[0]["absent"] == [slow]
    assert str(slow) not in rows[0]["assignment"] and len(rows[0]["assignment"]) == 3
    assert all(r["absent"] == [] for r in rows[1:])
    asked_again = [r for r in rows[1:-1] if slow in r["participants"]]
    assert asked_again and str(slow) in asked_again[0]["assignment"]  # back the next round it is asked
    assert endpoints[0].stats.dropped["stale round"] >= 1  # the late reply, not mixed into a later round


# -- final models as state_dict files --------------------------------------------------------
def client_accuracy(model: torch.nn.Module, config, setup, client: int) -> float:
    """The client's metric on its own test data, as the client measured it for the coordinator's record."""
    from p2pfl.agents.methods.base import test_metric
    from p2pfl.registry import METHODS, parse_algorithm_options

    options = parse_algorithm_options(config.algorithm, config.options)
    _, _, x_test, y_test = METHODS[config.algorithm].local_data(config, setup.dataset, options, client)
    return test_metric(model, torch.from_numpy(x_test), torch.from_numpy(y_test))


def loaded(model: torch.nn.Module, path) -> torch.nn.Module:
    model.load_state_dict(torch.load(path, weights_only=True))  # tensors only: no code in the file
    return model


@pytest.mark.parametrize("algorithm, options", [("fedavg", {}), ("clove", {"models": 4, "unknown_k": True}),
                                                ("cpcfl", {"pretrain_mode": "coordinator", "pretrain_rounds": 1})])
def test_coordinator_models_load_into_the_constructor_and_score_what_the_run_recorded(tmp_path, algorithm, options):
    """One file per model the coordinator holds (FedAvg: the global one), clusters.json naming each
    client's; rebuilt with MLP(...) alone, each client's model scores the final accuracy the run recorded."""
    import json

    config = config_for(algorithm, rounds=2, clusters=2, local_epochs=1, **options)
    config.agents = 9
    setup = prepare(config)
    run_simulation(setup, tmp_path)
    summary = summarize_federated(config, tmp_path)
    final = [json.loads(line) for line in (tmp_path / "agents" / "000" / "metrics.jsonl").open()][-1]
    coordinator = tmp_path / "agents" / "000"

    def constructor() -> MLP:
        return MLP(setup.dataset.input_shape, setup.dataset.num_classes, **config.model_args)

    if algorithm == "fedavg":
        assert not (coordinator / "clusters.json").exists() and summary["model_files"] == ["agents/000/global_model.pt"]
        model = loaded(constructor(), coordinator / "global_model.pt")
        files = {c: model for c in range(1, 9)}
    else:
        table = json.loads((coordinator / "clusters.json").read_text())
        assert table["assignment"] == final["assignment"]  # where each client ended: the final evaluation's choice
        models = {k: loaded(constructor(), coordinator / name) for k, name in table["model_files"].items()}
        assert len(models) == config.options["models"]
        assert summary["model_files"][-1] == "agents/000/clusters.json"
        files = {int(c): models[str(k)] for c, k in table["assignment"].items()}
    mean = np.mean([client_accuracy(files[c], config, setup, c) for c in range(1, 9)])  # float32 on the wire
    from p2pfl.cli.agent_report import agent_result  # what `p2pfl agent --id 0` prints at the end

    assert f"final model(s): {summary['model_files'][0]}" in agent_result(config, tmp_path, 0)
    assert mean == pytest.approx(final["accuracy"], abs=1e-6) and mean == pytest.approx(summary["final_accuracy"])


@pytest.mark.parametrize("algorithm", ["fedtsdp", "mtl", "local-only"])
def test_personalised_client_models_load_and_score_what_the_run_recorded(tmp_path, algorithm):
    """FedTSDP (shared layers + own top layers), multi-task (shared encoder + own decoder) and local-only: the
    result is each client's own model, saved by the client in agents/NNN/model.pt."""
    from p2pfl.agents.methods.multitask import task_model
    from p2pfl.agents.methods.base import true_cluster_of
    from p2pfl.registry import parse_algorithm_options
    from p2pfl.models.encoder_decoder import EncoderDecoder

    config = config_for(algorithm, rounds=3, local_epochs=1, **({"cluster_kind": "label-swap"}
                                                                 if algorithm == "fedtsdp" else {}))
    if algorithm == "mtl":
        config = load_config(ROOT / "examples" / "mtl_digits.yaml")
        config.rounds, config.agents = 2, 7
        config.options["local_epochs"] = 1
    setup = prepare(config)
    run_simulation(setup, tmp_path)
    summary = summarize_federated(config, tmp_path)
    clients = range(1, config.agents)
    table = ["agents/000/clusters.json"] if algorithm == "fedtsdp" else []  # the clusters it found, no models
    assert summary["model_files"] == table + [f"agents/{c:03d}/model.pt" for c in clients]
    if algorithm == "fedtsdp":
        import json

        from sklearn.metrics import adjusted_rand_score

        table = json.loads((tmp_path / "agents" / "000" / "clusters.json").read_text())
        ended_in = table["assignment"]
        assert "model_files" not in table and summary["final_ari"] == adjusted_rand_score(
            [true_cluster_of(config, parse_algorithm_options(algorithm, config.options), c) for c in clients],
            [ended_in[str(c)] for c in clients])
    options = parse_algorithm_options(config.algorithm, config.options)
    from p2pfl.cli.agent_report import agent_result  # what `p2pfl agent --id 1` prints at the end

    assert "final model(s): agents/001/model.pt;" in agent_result(config, tmp_path, 1)

    def constructor(client: int) -> torch.nn.Module:
        if algorithm != "mtl":
            return MLP(setup.dataset.input_shape, setup.dataset.num_classes, **config.model_args)
        task = true_cluster_of(config, options, client)
        built = task_model(config, setup.dataset, options, task)
        assert isinstance(built, EncoderDecoder)
        return built

    scores = [client_accuracy(loaded(constructor(c), tmp_path / "agents" / f"{c:03d}" / "model.pt"), config, setup, c)
              for c in clients]
    assert np.mean(scores) == pytest.approx(summary["final_accuracy"], abs=1e-6)  # float32 on the wire
