"""What a run shows and leaves: live accuracy in the progress line, the partition summary, final models
as state_dicts loadable with the model's constructor, a hand-started agent's result line."""

import json

import pytest
import torch
from click.testing import CliRunner

from p2pfl.agents import rundir
from p2pfl.models.evaluation import evaluate
from p2pfl.agents.progress import RunProgress
from p2pfl.cli.main import cli
from p2pfl.config import load_config, save_config
from p2pfl.data import load_dataset
from p2pfl.export import load_model
from p2pfl.models.mlp import MLP
from tests.conftest import run_agents_by_hand, small_config
from tests.plugin_fixtures import plain_net


def write_rows(run_dir, agent, rows):
    path = rundir.metrics_path(run_dir, agent)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def test_progress_shows_accuracy_of_evaluated_rounds_and_no_nan(tmp_path):
    config = small_config(agents=2, rounds=4)
    progress = RunProgress(config, tmp_path)
    progress.poll()
    assert progress.status() == "starting agents, waiting for every neighbour"
    write_rows(tmp_path, 0, [{"round": 0, "loss": 1.0}, {"round": 1, "loss": 0.8, "test_accuracy": 0.5}])
    write_rows(tmp_path, 1, [{"round": 0, "loss": 1.2}])
    progress.poll()
    assert progress.status() == "loss 1.000"  # agent 1 has not evaluated round 1 yet: no partial mean
    write_rows(tmp_path, 1, [{"round": 1, "loss": 0.6, "test_accuracy": 0.7}])
    progress.poll()
    assert progress.status() == "loss 0.700, test acc 0.600 local mean (after round 2)"  # no parameters saved here
    assert "nan" not in progress.status()


def test_run_folder_has_partition_and_final_models(tmp_path):
    path = tmp_path / "c.yaml"
    save_config(small_config(agents=3, rounds=6, eval_every=3), path)
    out = tmp_path / "o"
    result = CliRunner().invoke(cli, ["run", str(path), "--in-process", "--no-progress", "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "partition: 3 agents x 479 training samples" in result.output and "given to no one" not in result.output
    partition = json.loads((out / "partition.json").read_text())
    assert sum(a["samples"] for a in partition["per_agent"]) + partition["samples_dropped"] == 1437
    assert all(sum(a["class_counts"]) == a["samples"] for a in partition["per_agent"])
    assert (out / "partition.png").read_bytes()[:4] == b"\x89PNG"

    data = load_dataset("digits")
    consensus = MLP((1, 8, 8), 10)  # the model's own constructor
    consensus.load_state_dict(torch.load(out / "consensus_model.pt", weights_only=True))
    summary = json.loads((out / "summary.json").read_text())
    accuracy, _ = evaluate(consensus, torch.from_numpy(data.x_test), torch.from_numpy(data.y_test))
    assert accuracy == pytest.approx(summary["consensus_accuracy"])
    agent = MLP((1, 8, 8), 10)
    agent.load_state_dict(torch.load(rundir.agent_dir(out, 2) / "model.pt", weights_only=True))
    accuracy, _ = evaluate(agent, torch.from_numpy(data.x_test), torch.from_numpy(data.y_test))
    last = json.loads(rundir.metrics_path(out, 2).read_text().splitlines()[-1])
    assert accuracy == pytest.approx(last["test_accuracy"])
    assert isinstance(load_model(out), MLP)

    progress = RunProgress(load_config(out / "config.yaml"), out)  # the live line, read from the finished folder
    progress.poll()
    assert f"{summary['consensus_accuracy']:.3f} consensus (after round 6)" in progress.status()


def test_an_own_model_is_saved_with_its_own_keys(tmp_path):
    path = tmp_path / "c.yaml"
    save_config(small_config(agents=2, rounds=2, model="tests.plugin_fixtures:plain_net", model_args={"width": 8}),
                path)
    result = CliRunner().invoke(cli, ["run", str(path), "--in-process", "--no-progress", "--out", str(tmp_path / "o")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    net = plain_net((1, 8, 8), 10, width=8)
    net.load_state_dict(torch.load(tmp_path / "o" / "consensus_model.pt", weights_only=True))


def test_a_hand_started_agent_prints_its_result(tmp_path, no_leaked_agents):
    config = small_config(agents=2, rounds=4, eval_every=2)
    path = tmp_path / "c.yaml"
    save_config(config, path)
    outputs = run_agents_by_hand(path, 2, tmp_path / "hand")
    stdout = outputs[1][0]
    assert "agent 1 finished 4 rounds" in stdout and "test accuracy" in stdout and "after round 4" in stdout
    assert "round 4/4" in stdout  # its progress lines
    assert (rundir.agent_dir(tmp_path / "hand", 1) / "model.pt").exists()
