"""Packing: several agents as threads of one worker process (network.agents_per_process), same run as one
process per agent and as --simulate; the launcher still reports and stops every agent on its own."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from p2pfl.agents import rundir
from p2pfl.agents.packing import agents_per_process, worker_groups
from p2pfl.agents.process import StartLine
from p2pfl.agents.setup import prepare
from p2pfl.agents.simulate import run_simulation
from p2pfl.config import load_config
from p2pfl.errors import Diverged
from p2pfl.transport import check_ports_free
from tests.conftest import agent_pids, run_cli, small_config
from tests.test_processes import forkservers, losses, start_run, write_config


def test_worker_groups_are_consecutive_even_and_at_most_n():
    def groups(agents, per, cores=2):
        return worker_groups(small_config(agents=agents, network__agents_per_process=per), cores)

    assert groups(6, 3) == [[0, 1, 2], [3, 4, 5]]
    assert groups(7, 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert groups(4, 1) == [[0], [1], [2], [3]]
    assert groups(3, 10) == [[0, 1, 2]]
    # auto: one worker process per core
    assert agents_per_process(small_config(agents=64, network__agents_per_process=0), cores=2) == 32
    assert agents_per_process(small_config(agents=4, network__agents_per_process=0), cores=2) == 2
    assert agents_per_process(small_config(agents=2, network__agents_per_process=0), cores=2) == 1
    assert groups(5, 0, cores=2) == [[0, 1, 2], [3, 4]]
    assert len(groups(64, 0, cores=2)) == 2


def test_packed_and_simulated_runs_give_the_same_losses(tmp_path, no_leaked_agents):
    """6 agents, 3 per process: the same per-round losses as --simulate (as a process per agent gives, in
    tests/test_processes.py), with the packed agents as greenlets (the default) or threads; every agent keeps
    its own log file (only its lines), metrics and model."""
    config = small_config(agents=6, rounds=12, eval_every=6, network__agents_per_process=3)
    path = write_config(tmp_path, config)
    packed = run_cli("run", str(path), "--out", str(tmp_path / "packed"), "--no-progress")
    assert packed.returncode == 0, packed.stderr
    assert "consensus model" in packed.stdout and "6 agents (processes, 3 agents per process)" in packed.stdout
    run_simulation(prepare(config), tmp_path / "sim")
    sim = losses(tmp_path / "sim", 6)
    assert len(sim) == 6 * 12
    assert losses(tmp_path / "packed", 6) == pytest.approx(sim, rel=1e-5, abs=1e-6)
    for agent in range(6):
        lines = rundir.log_path(tmp_path / "packed", agent).read_text().splitlines()
        assert lines and all(f" agent {agent} " in line for line in lines if line[:4].isdigit())
        assert "finished 12 rounds" in lines[-1]
        assert (rundir.agent_dir(tmp_path / "packed", agent) / "model.pt").exists()
    assert sorted(p.name for p in (tmp_path / "packed" / "workers").iterdir()) == ["000.log", "001.log"]
    check_ports_free(config)
    # A thread per packed agent instead of greenlets of one thread (hub.py): the same losses again
    threads = run_cli("run", str(path), "--set", "network.scheduler=threads", "--out", str(tmp_path / "threads"),
                      "--no-progress")
    assert threads.returncode == 0, threads.stderr
    assert losses(tmp_path / "threads", 6) == pytest.approx(sim, rel=1e-5, abs=1e-6)
    check_ports_free(config)
    # --simulate: the same packed engine over inproc and private Unix sockets, no port, no keys, same losses
    simulated = run_cli("run", str(path), "--simulate", "--out", str(tmp_path / "packed-sim"), "--no-progress")
    assert simulated.returncode == 0, simulated.stderr
    assert "6 agents (simulate, 3 agents per process)" in simulated.stdout
    assert losses(tmp_path / "packed-sim", 6) == pytest.approx(sim, rel=1e-5, abs=1e-6)
    saved = load_config(tmp_path / "packed-sim" / rundir.CONFIG)
    assert saved.security.mode == "none" and all(a.startswith("ipc://") for a in saved.network.addresses)
    assert not Path(saved.network.addresses[0][len("ipc://"):]).parent.exists()  # its socket folder is gone
    assert not (tmp_path / "packed-sim" / "keys").exists()


@pytest.mark.parametrize("algorithm", ["qgm", "ccl"])
def test_packed_qgm_and_ccl_mates_reading_each_others_vectors_in_place_give_the_same_losses(
        tmp_path, no_leaked_agents, algorithm):
    """QGM and CCL send their half step and m_hat frozen: a packed mate reads the sender's own vectors, no copy.
    Had the sender written into one after sending it, the mate would have failed (the version check) or mixed
    another vector; the losses are those of the in-memory exchange, where every message is bytes."""
    config = small_config(agents=4, rounds=10, eval_every=5, algorithm=algorithm, network__agents_per_process=2,
                          options={"gossip_momentum": True})
    path = write_config(tmp_path, config)
    packed = run_cli("run", str(path), "--out", str(tmp_path / "packed"), "--no-progress")
    assert packed.returncode == 0, packed.stderr
    assert "4 agents (processes, 2 agents per process)" in packed.stdout
    run_simulation(prepare(config), tmp_path / "sim")
    sim = losses(tmp_path / "sim", 4)
    assert len(sim) == 4 * 10
    assert losses(tmp_path / "packed", 4) == pytest.approx(sim, rel=1e-5, abs=1e-6)
    check_ports_free(config)


def test_a_packed_diverged_agent_stops_the_whole_run(tmp_path, no_leaked_agents):
    config = small_config(agents=4, rounds=400, optim__lr=200.0, optim__momentum=0.9,
                          network__agents_per_process=2)
    path = write_config(tmp_path, config)
    result = run_cli("run", str(path), "--no-progress", "--out", str(tmp_path / "out"))
    assert result.returncode == Diverged.exit_code, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: agent ")
    summary = json.loads((tmp_path / "out" / rundir.SUMMARY).read_text())
    assert summary["status"] == "diverged" and summary["agents_finished"] == 0


def test_sigterm_stops_every_packed_agent(tmp_path, no_leaked_agents):
    config, launcher = start_run(tmp_path, sigint_ignored=True, network__agents_per_process=2)
    try:
        assert len(agent_pids()) == 2  # two workers, named p2pfl-agent-w0 and -w1
        launcher.send_signal(signal.SIGTERM)
        out, err = launcher.communicate(timeout=60)
    finally:
        launcher.kill()
    assert launcher.returncode == 143, err
    assert "every agent was stopped" in err and "Traceback" not in err
    assert agent_pids() == []
    check_ports_free(config)


def test_sigkill_of_the_launcher_leaves_no_packed_agent_alive(tmp_path, no_leaked_agents):
    config, launcher = start_run(tmp_path, network__agents_per_process=2)
    assert len(agent_pids()) == 2
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.communicate(timeout=60)
    deadline = time.monotonic() + 60
    while agent_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert agent_pids() == []
    for pid in forkservers():
        os.kill(pid, signal.SIGKILL)
    # Stopped by the forkserver's death (forkserver_guard) or by its own watch of the launcher: either way
    # every agent left its round loop, at a round's end ("stopped at round N") or in a wait the stop cut
    # short ("stopped"), closed its sockets, and says so.
    for agent in range(4):
        assert f"agent {agent} stopped" in rundir.error_path(tmp_path / "run", agent).read_text()
    check_ports_free(config)


def test_a_workers_agents_start_their_rounds_together_and_a_failed_build_holds_nobody_up():
    line = StartLine([0, 1, 2])
    stop = threading.Event()
    started = []
    waiters = [threading.Thread(target=lambda a=a: (line.arrive(a), line.wait(stop), started.append(a))) for a in (0, 1)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.3)
    assert started == []  # agent 2 is still being built
    line.arrive(2)  # built, or failed: run_agent's finally arrives for it either way
    for waiter in waiters:
        waiter.join(5)
    assert sorted(started) == [0, 1]
    late = StartLine([0, 1])
    stop.set()
    late.wait(stop)  # a stopped worker does not wait for agents that will never be built
