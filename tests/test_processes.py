"""Real multi-process runs over ZeroMQ on loopback; every test checks that no agent is left behind."""

import json
import signal
import subprocess
import sys
import time

import pytest

from p2pfl.agents import rundir
from p2pfl.agents.setup import prepare
from p2pfl.agents.simulate import run_simulation
from p2pfl.config import save_config
from p2pfl.transport import check_ports_free
from tests.conftest import ROOT, agent_pids, run_cli, small_config


def losses(run_dir, agents):
    """Per-round losses of every agent, flattened agent by agent."""
    return [json.loads(line)["loss"] for a in range(agents)
            for line in rundir.metrics_path(run_dir, a).read_text().splitlines()]


def write_config(tmp_path, config):
    path = tmp_path / "run.yaml"
    save_config(config, path)
    return path


def test_processes_give_the_same_losses_as_simulate(tmp_path, no_leaked_agents):
    config = small_config(agents=4, rounds=15, eval_every=5)
    path = write_config(tmp_path, config)
    result = run_cli("run", str(path), "--out", str(tmp_path / "proc"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "consensus model" in result.stdout and "mean test accuracy of the local models" in result.stdout
    run_simulation(prepare(config), tmp_path / "sim")
    proc, sim = losses(tmp_path / "proc", 4), losses(tmp_path / "sim", 4)
    assert len(proc) == 4 * 15
    assert proc == pytest.approx(sim, rel=1e-5, abs=1e-6)
    summary = json.loads((tmp_path / "proc" / rundir.SUMMARY).read_text())
    assert summary["mode"] == "processes" and 0 < summary["consensus_accuracy"] <= 1
    assert (tmp_path / "proc" / rundir.PLOT).stat().st_size > 0
    check_ports_free(config)  # every port was released


def test_agents_started_by_hand_give_the_same_run(tmp_path, no_leaked_agents):
    config = small_config(agents=3, rounds=10)
    config.topology.kind = "complete"
    path = write_config(tmp_path, config)
    procs = [subprocess.Popen([sys.executable, "-m", "p2pfl.cli", "agent", "--config", str(path), "--id", str(i),
                               "--out", str(tmp_path / "hand")], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    try:
        outputs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), outputs
    run_simulation(prepare(config), tmp_path / "sim")
    assert losses(tmp_path / "hand", 3) == pytest.approx(losses(tmp_path / "sim", 3), rel=1e-5, abs=1e-6)
    report = run_cli("report", str(tmp_path / "hand"))
    assert report.returncode == 0, report.stderr
    assert "consensus model" in report.stdout


def start_run(tmp_path, rounds=100000):
    config = small_config(agents=4, rounds=rounds, eval_every=0)
    path = write_config(tmp_path, config)
    launcher = subprocess.Popen([sys.executable, "-m", "p2pfl.cli", "run", str(path), "--out", str(tmp_path / "run"),
                                 "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(agent_pids()) < 4 or not rundir.metrics_path(tmp_path / "run", 3).exists():
        assert time.monotonic() < deadline and launcher.poll() is None, launcher.communicate()
        time.sleep(0.2)
    return config, launcher


def test_ctrl_c_stops_every_agent(tmp_path, no_leaked_agents):
    config, launcher = start_run(tmp_path)
    try:
        launcher.send_signal(signal.SIGINT)
        out, err = launcher.communicate(timeout=60)
    finally:
        launcher.kill()
    assert launcher.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    check_ports_free(config)


def test_a_crashed_agent_stops_the_run_with_a_clear_error(tmp_path, no_leaked_agents):
    config, launcher = start_run(tmp_path)
    try:
        victim = sorted(agent_pids())[0]
        import os

        os.kill(victim, signal.SIGKILL)
        out, err = launcher.communicate(timeout=60)
    finally:
        launcher.kill()
    assert launcher.returncode != 0
    assert "failed" in err and "Traceback" not in err
    check_ports_free(config)
