"""Coordinator peer and clustered FL: aggregation and assignment rules by hand, then real runs."""

import json

import numpy as np
import pytest
import torch

from p2pfl.agents.federated import ClientLoop, summarize_federated
from p2pfl.agents.setup import prepare
from p2pfl.agents.simulate import run_simulation
from p2pfl.algorithms.federated import (StabilityTracker, aggregate_per_model, clove_assign, ifca_assign,
                                        match_clusters_to_models, random_assignment, weighted_average)
from p2pfl.config import load_config, save_config
from p2pfl.data import load_dataset
from p2pfl.data.clusters import client_data, true_cluster
from p2pfl.errors import UserError
from p2pfl.exchange import InMemoryHub
from tests.conftest import ROOT, run_cli, small_config


def test_weighted_average_and_untouched_models_keep_their_parameters():
    a, b = torch.tensor([0.0, 0.0]), torch.tensor([3.0, 6.0])
    assert weighted_average([a, b], [2, 1]).tolist() == [1.0, 2.0]
    models = [torch.zeros(2), torch.ones(2), torch.full((2,), 5.0)]
    out = aggregate_per_model(models, {1: (0, torch.full((2,), 2.0), 1.0), 2: (0, torch.full((2,), 4.0), 3.0),
                                       3: (1, torch.full((2,), 9.0), 5.0)})
    assert out[0].tolist() == [3.5, 3.5] and out[1].tolist() == [9.0, 9.0] and out[2].tolist() == [5.0, 5.0]


def test_ifca_takes_the_lowest_loss_and_hungarian_matches_clusters_to_models():
    losses = np.array([[0.1, 2.0, 3.0], [2.5, 0.2, 3.0], [0.3, 0.1, 9.0]])
    assert ifca_assign(losses).tolist() == [0, 1, 1]
    labels = np.array([1, 1, 0, 0])  # cluster 1 is good on model 2, cluster 0 on model 0
    L = np.array([[5.0, 4.0, 0.1], [5.0, 4.0, 0.2], [0.3, 2.0, 6.0], [0.2, 2.0, 6.0]])
    assert match_clusters_to_models(labels, L).tolist() == [2, 2, 0, 0]


def test_clove_recovers_clusters_from_loss_vectors_and_random_start_uses_every_model():
    rng = np.random.default_rng(0)
    centers = np.array([[0.2, 2.0, 2.0], [2.0, 0.2, 2.0], [2.0, 2.0, 0.2]])
    truth = np.repeat([0, 1, 2], 4)
    losses = centers[truth] + rng.normal(0, 0.05, (12, 3))
    assert clove_assign(losses, seed=0).tolist() == truth.tolist()
    assert sorted(set(random_assignment(7, 3, rng).tolist())) == [0, 1, 2]


def test_stability_stops_clustering_after_three_unchanged_rounds():
    tracker = StabilityTracker(3)
    assert [tracker.update({1: 0, 2: 1}) for _ in range(3)] == [False, False, False]
    assert tracker.update({1: 0, 2: 1}) is True


def test_rotation_partition_records_true_clusters():
    data = load_dataset("digits")
    assert [true_cluster(c, 20, 4) for c in (0, 4, 5, 19)] == [0, 0, 1, 3]
    x0, *_ = client_data(data, 0, 20, 4, "rotation", 0)
    x5, _, xt5, _, cluster = client_data(data, 5, 20, 4, "rotation", 0)
    assert cluster == 1 and np.allclose(np.rot90(xt5, k=-1, axes=(-2, -1)), data.x_test)
    _, y, _, _, c = client_data(data, 19, 20, 4, "label-groups", 0)
    assert c == 3 and set(np.unique(y)) <= {8, 9}


def clustered(algorithm, init, rounds=5, **options):
    config = load_config(ROOT / "examples" / "clove_rotated.yaml")
    config.algorithm, config.rounds = algorithm, rounds
    config.options.update(init=init, **options)
    return config


def run_sim(config, tmp_path):
    run_simulation(prepare(config), tmp_path)
    return summarize_federated(config, tmp_path)


def test_clove_reaches_ari_one_within_five_rounds_from_identical_models_where_ifca_collapses(tmp_path):
    clove = run_sim(clustered("clove", "identical"), tmp_path / "clove")
    ifca = run_sim(clustered("ifca", "identical"), tmp_path / "ifca")
    assert clove["first_round_with_ari_1"] is not None and clove["first_round_with_ari_1"] <= 5
    assert clove["final_ari"] == 1.0
    assert ifca["round0_collapse_share"] == 1.0 and max(ifca["ari_per_round"]) == 0.0
    assert clove["final_accuracy"] > ifca["final_accuracy"]


def test_label_swap_clusters_are_recovered(tmp_path):
    summary = run_sim(clustered("clove", "random", rounds=6, cluster_kind="label-swap"), tmp_path)
    assert summary["final_ari"] == 1.0


def test_a_silent_coordinator_stops_a_client_with_a_clear_error(tmp_path):
    from p2pfl.constants import HELLO_ROUND, TAG_HELLO
    from p2pfl.errors import PeerUnreachable

    config = clustered("clove", "random")
    config.options["client_timeout"] = 0.3
    config.network.startup_timeout = 0.3
    setup = prepare(config)
    hub = InMemoryHub()
    client = ClientLoop(config, 3, setup.dataset, hub.endpoint(3, [0], setup.run_id, 1.0), tmp_path)
    with pytest.raises(PeerUnreachable, match="coordinator .* did not answer"):  # never up
        client.run()
    hub = InMemoryHub()
    client = ClientLoop(config, 3, setup.dataset, hub.endpoint(3, [0], setup.run_id, 1.0), tmp_path)
    coordinator = hub.endpoint(0, [3], setup.run_id, 1.0)
    coordinator.send(HELLO_ROUND, TAG_HELLO, {3: {"round": torch.tensor([0])}})  # up, then silent
    with pytest.raises(UserError, match="coordinator was silent"):
        client.run()


def start_clients(config, setup, endpoints, run_dir, ids):
    """Client loops in threads; returns the threads and what each raised."""
    from tests.helpers import loops_in_threads

    return loops_in_threads([ClientLoop(config, a, setup.dataset, endpoints[a], run_dir) for a in ids])


def test_the_coordinator_waits_for_every_client_at_start_and_goes_on_without_one_that_never_comes(tmp_path,
                                                                                                   caplog):
    import logging
    import time

    from p2pfl.agents.federated import CoordinatorLoop

    # client_timeout is long: the missing client is marked down at start-up, never waited for in a round.
    config = clustered("clove", "random", rounds=2, client_timeout=60.0)
    config.agents, config.network.startup_timeout = 9, 1.0
    setup = prepare(config)
    hub = InMemoryHub()
    endpoints = {a: hub.endpoint(a, setup.graph[a], setup.run_id, 5.0) for a in range(9)}
    missing = 6  # its endpoint exists (messages reach its mailbox) but it never starts
    threads, errors = start_clients(config, setup, endpoints, tmp_path, [a for a in range(1, 9) if a != missing])
    deadline = time.monotonic() + 120
    while hub.mailbox(0).qsize() < 7 and time.monotonic() < deadline:  # every hello is in before the
        time.sleep(0.05)  # coordinator's 1 s start-up wait begins: only the missing one can miss it
    with caplog.at_level(logging.WARNING, logger="p2pfl.federated"):
        rows = CoordinatorLoop(config, setup.dataset, endpoints[0], tmp_path).run()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert [r["round"] for r in rows] == [0, 1, 2] and all(r["absent"] == [missing] for r in rows)
    assert all(str(missing) not in r["assignment"] and len(r["assignment"]) == 7 for r in rows)
    assert any(f"clients [{missing}] did not say hello" in r.getMessage() for r in caplog.records)


def test_a_coordinator_no_client_greets_stops_with_a_one_line_error(tmp_path):
    from p2pfl.agents.federated import CoordinatorLoop
    from p2pfl.errors import PeerUnreachable

    config = clustered("clove", "random")
    config.agents, config.network.startup_timeout = 4, 0.3
    setup = prepare(config)
    hub = InMemoryHub()
    endpoints = {a: hub.endpoint(a, setup.graph[a], setup.run_id, 1.0) for a in range(4)}
    with pytest.raises(PeerUnreachable, match="no client said hello") as error:
        CoordinatorLoop(config, setup.dataset, endpoints[0], tmp_path).run()
    assert "\n" not in str(error.value)


def test_processes_give_the_same_assignments_as_simulate(tmp_path, no_leaked_agents):
    """Two worker processes of 4 and 3 agents: clients talk to the coordinator within and across processes."""
    config = clustered("clove", "random", rounds=3, clusters=2, models=2)
    config.agents, config.network.agents_per_process = 7, 4
    config.network.addresses = small_config(agents=7).network.addresses
    save_config(config, tmp_path / "run.yaml")
    result = run_cli("run", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "proc"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "ARI" in result.stdout
    run_simulation(prepare(config), tmp_path / "sim")

    def assignments(folder):
        return [json.loads(line).get("assignment") for line in (folder / "agents" / "000" / "metrics.jsonl").open()]

    assert assignments(tmp_path / "proc") == assignments(tmp_path / "sim")


def test_unknown_k_is_chosen_by_silhouette_with_the_margin():
    from p2pfl.algorithms.federated import choose_k

    rng = np.random.default_rng(1)
    centers = np.array([[0.0, 5.0, 5.0, 5.0], [5.0, 0.0, 5.0, 5.0], [5.0, 5.0, 0.0, 5.0]])
    truth = np.repeat([0, 1, 2], 5)
    points = centers[truth] + rng.normal(0, 0.1, (15, 4))
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth, choose_k(points, k_max=6)) == 1.0
    two = np.vstack([points[:5], points[5:10]])  # only two real groups: a larger K must not win
    assert len(set(choose_k(two, k_max=6).tolist())) == 2


def test_clove_with_an_upper_bound_on_k_recovers_two_clusters_and_says_how_many_it_found(tmp_path, capsys):
    import matplotlib.image

    from click.testing import CliRunner

    from p2pfl.cli.main import cli
    from p2pfl.run_summary import summarize_run

    config = clustered("clove", "random", rounds=4, clusters=2, models=4, unknown_k=True)
    run_simulation(prepare(config), tmp_path)
    save_config(config, tmp_path / "config.yaml")
    summary = summarize_run(config, tmp_path, "simulate")
    assert summary["final_ari"] == 1.0
    rows = [json.loads(line) for line in (tmp_path / "agents" / "000" / "metrics.jsonl").open()]
    assert "clusters_found" not in rows[0]  # round 0 is the random start over all 4 models, not a clustering
    assert [r["clusters_found"] for r in rows[1:]] == [len(set(r["assignment"].values())) for r in rows[1:]]
    assert rows[-1]["clusters_found"] == 2
    assert summary["clusters_found_per_round"] == [None] + [r["clusters_found"] for r in rows[1:]]
    assert summary["final_clusters_found"] == 2
    assert "clusters found (models used of at most 4): 2 at the end" in capsys.readouterr().out
    assert matplotlib.image.imread(tmp_path / "curves.png").shape[1] > 1700  # three panels: metric, ARI, clusters
    from p2pfl.agents.progress import RunProgress

    progress = RunProgress(config, tmp_path, enabled=False)
    progress.poll()
    assert "2 clusters found" in progress.status()
    (tmp_path / "summary.json").unlink()
    report = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert report.exit_code == 0, report.output
    assert "2 at the end" in report.output
    assert json.loads((tmp_path / "summary.json").read_text())["final_clusters_found"] == 2


def test_clove_without_unknown_k_records_no_clusters_found(tmp_path):
    summary = run_sim(clustered("clove", "random", rounds=1, clusters=2, models=2), tmp_path)
    assert "clusters_found_per_round" not in summary and "final_clusters_found" not in summary


def test_a_killed_coordinator_restarted_with_resume_continues_and_the_clients_follow(tmp_path, no_leaked_agents):
    import os
    import signal
    import subprocess
    import sys

    from p2pfl.agents import rundir
    from tests.test_processes import pid_of, rounds_done, wait_for_round

    config = clustered("clove", "random", rounds=20, clusters=3, models=3, local_epochs=2, client_timeout=90.0)
    config.agents, config.checkpoint_every = 4, 1
    config.network.agents_per_process = 1  # the coordinator's own process is killed and restarted
    config.network.addresses = small_config(agents=4).network.addresses
    save_config(config, tmp_path / "run.yaml")
    run_dir = tmp_path / "run"
    launcher = subprocess.Popen([sys.executable, "-m", "p2pfl.cli", "run", str(tmp_path / "run.yaml"), "--out",
                                 str(run_dir), "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    restarted = None
    try:
        wait_for_round(run_dir, 0, 5, launcher)
        os.kill(pid_of(0), signal.SIGKILL)
        killed_after = rounds_done(run_dir, 0)
        restarted = subprocess.Popen([sys.executable, "-m", "p2pfl.cli", "agent", "--config",
                                      str(run_dir / rundir.CONFIG), "--id", "0", "--out", str(run_dir), "--resume"],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, err = restarted.communicate(timeout=240)
        assert restarted.returncode == 0, err
        launcher.communicate(timeout=240)
    finally:
        launcher.kill()
        if restarted:
            restarted.kill()
    assert "loaded checkpoint of round" in err and "continuing at round" in err
    rows = [json.loads(line) for line in rundir.metrics_path(run_dir, 0).read_text().splitlines()]
    rounds = [r["round"] for r in rows]
    assert rounds[-1] == 20 and len(rounds) > killed_after  # it went on to the final evaluation
    assert rounds == sorted(rounds)  # the rounds went on after the checkpoint, never back
    assert rows[-1]["absent"] == [] and rows[-1]["ari"] == 1.0  # every client followed and answered
    assert not any(rundir.error_path(run_dir, c).exists() for c in (1, 2, 3))  # no client gave up
    assert all("skipping there" in rundir.log_path(run_dir, c).read_text() for c in (1, 2, 3))


@pytest.mark.parametrize("example, per_process", [("cpcfl_rotated.yaml", 1), ("fedtsdp_label_swap.yaml", 5),
                                                  ("mtl_digits.yaml", 5)])
def test_each_method_runs_as_processes_and_matches_simulate(tmp_path, no_leaked_agents, example, per_process):
    """A process per agent, or the coordinator and its clients as threads of one worker process (packed):
    either way every message crosses ZeroMQ, and the records equal --simulate's."""
    config = load_config(ROOT / "examples" / example)
    config.agents, config.rounds = 5, 3
    config.network.agents_per_process = per_process
    config.options.update(clusters=2, local_epochs=1)
    if config.algorithm == "cpcfl":
        config.options.update(models=2, pretrain_rounds=2)
    if config.algorithm == "mtl":
        config.options.pop("clusters")
    config.network.addresses = small_config(agents=5).network.addresses
    save_config(config, tmp_path / "run.yaml")
    result = run_cli("run", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "proc"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "final" in result.stdout and "run folder" in result.stdout
    run_simulation(prepare(config), tmp_path / "sim")

    def rows(folder):
        lines = (folder / "agents" / "000" / "metrics.jsonl").read_text().splitlines()
        keep = ("round", "ari", "assignment", "clusters", "personal_layers")
        return [{k: v for k, v in json.loads(line).items() if k in keep} for line in lines]

    def accuracies(folder):
        return [json.loads(line).get("accuracy") for line in (folder / "agents" / "000" / "metrics.jsonl").open()]

    assert rows(tmp_path / "proc") == rows(tmp_path / "sim")
    assert accuracies(tmp_path / "proc") == pytest.approx(accuracies(tmp_path / "sim"), abs=1e-6)
    from click.testing import CliRunner

    from p2pfl.cli.main import cli

    report = CliRunner().invoke(cli, ["report", str(tmp_path / "proc")])
    assert report.exit_code == 0, report.output
    assert result.stdout.splitlines()[-3:] == report.output.splitlines()[-3:]  # the same summary, from the folder
