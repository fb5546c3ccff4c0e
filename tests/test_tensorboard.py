"""`tensorboard: true`: the per-round metrics as TensorBoard scalars in the run folder, read back from the
event file itself (TFRecord framing, tensorboardX's own Event protobuf)."""

import json
import struct
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from p2pfl.cli.main import cli
from p2pfl.config import save_config
from tests.conftest import ROOT, small_config

pytest.importorskip("tensorboardX")  # in the `test` extra: CI installs it


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every (step, value) per tag of the one event file in `folder`: records are [length u64, crc u32,
    data, crc u32], data an Event protobuf."""
    from tensorboardX.proto.event_pb2 import Event

    files = list(folder.glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    data, offset, scalars = files[0].read_bytes(), 0, {}
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        event = Event.FromString(data[offset + 12:offset + 12 + length])
        offset += 12 + length + 4
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_a_gossip_run_writes_loss_and_accuracies_per_round(tmp_path):
    config = small_config(agents=4, rounds=6, eval_every=3, tensorboard=True)
    save_config(config, tmp_path / "run.yaml")
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "run.yaml"), "--in-process", "--no-progress", "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert f"TensorBoard events: {run / 'tensorboard'}" in result.output
    scalars = read_scalars(run / "tensorboard")
    summary = json.loads((run / "summary.json").read_text())
    assert [step for step, _ in scalars["train/loss_mean"]] == [1, 2, 3, 4, 5, 6]  # rounds counted from 1
    assert scalars["train/loss_mean"][-1][1] == pytest.approx(summary["final_train_loss_mean"], rel=1e-6)
    assert [step for step, _ in scalars["test/local_accuracy_mean"]] == [3, 6]  # the evaluation rounds
    assert scalars["test/local_accuracy_mean"][-1][1] == pytest.approx(summary["local_accuracy_mean"], rel=1e-6)
    assert scalars["test/consensus_accuracy"][-1] == (6, pytest.approx(summary["consensus_accuracy"], rel=1e-6))
    assert {"test/local_loss_mean", "test/consensus_loss"} <= set(scalars)
    report = CliRunner().invoke(cli, ["report", str(run)])  # summarized again: the events are replaced, not doubled
    assert report.exit_code == 0, report.output
    assert len(read_scalars(run / "tensorboard")["train/loss_mean"]) == 6


def test_a_coordinator_run_writes_its_records_and_the_clusters_found(tmp_path):
    from p2pfl.config import load_config

    config = load_config(ROOT / "examples" / "clove_rotated.yaml")
    config.rounds, config.agents, config.tensorboard = 2, 9, True
    config.options.update(clusters=2, models=3, unknown_k=True, local_epochs=1)
    save_config(config, tmp_path / "run.yaml")
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "run.yaml"), "--in-process", "--no-progress", "--out", str(run)])
    assert result.exit_code == 0, result.output
    scalars = read_scalars(run / "tensorboard")
    summary = json.loads((run / "summary.json").read_text())
    assert [step for step, _ in scalars["test/accuracy_mean"]] == [1, 2, 3]  # 3: the final evaluation
    assert scalars["test/accuracy_mean"][-1][1] == pytest.approx(summary["final_accuracy"], rel=1e-6)
    assert scalars["clustering/ari"][-1][1] == pytest.approx(summary["final_ari"])
    assert scalars["clustering/clusters_found"][-1] == (3, summary["final_clusters_found"])


def test_off_by_default_and_a_missing_tensorboardx_is_one_clear_error(tmp_path, monkeypatch):
    config = small_config(agents=2, rounds=2)
    assert config.tensorboard is False
    save_config(config, tmp_path / "run.yaml")
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` raises ImportError
    off = CliRunner().invoke(cli, ["run", str(tmp_path / "run.yaml"), "--in-process", "--no-progress",
                                   "--out", str(tmp_path / "off")])
    assert off.exit_code == 0, off.output
    assert not (tmp_path / "off" / "tensorboard").exists()
    on = CliRunner().invoke(cli, ["run", str(tmp_path / "run.yaml"), "--in-process", "--no-progress",
                                  "--out", str(tmp_path / "on"), "--set", "tensorboard=true"])
    assert on.exit_code == 2
    assert on.output.strip().splitlines() == ["error: tensorboard: true needs tensorboardX: pip install "
                                              "'p2pfl[tensorboard]' (or pip install tensorboardX), or set "
                                              "tensorboard: false"]
    assert not (tmp_path / "on").exists()  # refused before the run, not after it


def test_rounds_reach_tensorboard_while_the_run_goes_each_once_every_agent_reported_it(tmp_path):
    """The launcher's watcher (progress shown or not) writes a round when its last agent reports it."""
    from p2pfl.agents import rundir
    from p2pfl.agents.progress import RunProgress

    config = small_config(agents=2, rounds=4, tensorboard=True, consensus_curve=False)

    def report(agent: int, **row) -> None:
        path = rundir.metrics_path(tmp_path, agent)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    with RunProgress(config, tmp_path, enabled=False) as progress:  # as with --no-progress
        report(0, round=0, loss=1.0)
        report(0, round=1, loss=0.5, test_loss=2.0, test_accuracy=0.4)
        progress.update()
        assert progress.live.writer is None  # agent 1 has reported nothing: no round is complete
        report(1, round=0, loss=3.0)
        progress.update()
        deadline = time.monotonic() + 60  # the writer's thread flushes every 2 s: on disk mid-run
        while not read_scalars(tmp_path / "tensorboard") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert read_scalars(tmp_path / "tensorboard") == {"train/loss_mean": [(1, 2.0)]}
        report(1, round=1, loss=1.5, test_loss=1.0, test_accuracy=0.6)
        progress.update()
    scalars = read_scalars(tmp_path / "tensorboard")
    assert scalars["train/loss_mean"] == [(1, 2.0), (2, 1.0)]
    assert scalars["test/local_loss_mean"] == [(2, 1.5)]
    assert scalars["test/local_accuracy_mean"] == [(2, pytest.approx(0.5))]
    assert "test/consensus_accuracy" not in scalars  # consensus_curve off: nothing to average


def test_a_progress_watcher_of_one_hand_started_agent_writes_no_events(tmp_path):
    from p2pfl.agents.progress import RunProgress

    config = small_config(agents=3, rounds=2, tensorboard=True)
    assert RunProgress(config, tmp_path, agents=[1]).live is None  # one agent's rows are not the run's means
    assert RunProgress(config, tmp_path).live is not None
