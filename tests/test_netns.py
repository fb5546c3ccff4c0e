"""Agents on separate network hosts (Linux network namespaces on a private bridge), with a link cut
mid-run and a partition by iptables DROP. Needs root and iproute2/iptables; skipped otherwise."""

import functools
import os
import shutil
import subprocess
import sys
import time

import pytest

from p2pfl.agents import rundir
from p2pfl.config import save_config
from p2pfl.security import generate_keys
from tests.conftest import ROOT, MetricsTail, child_env, small_config

AGENTS = 3


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check)


@pytest.fixture
def hosts():
    """AGENTS namespaces h0.., each with one veth into a bridge that lives in its own switch namespace."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("network namespaces need root and iproute2")
    tag = f"p2t{os.getpid() % 100000}"
    switch, names = f"{tag}sw", [f"{tag}h{i}" for i in range(AGENTS)]
    try:
        run("ip", "netns", "add", switch)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"ip netns is not usable here: {exc.stderr.strip()}")
    try:
        run("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", switch, "link", "set", "br0", "up")
        for i, name in enumerate(names):
            run("ip", "netns", "add", name)
            run("ip", "link", "add", f"{tag}v{i}", "type", "veth", "peer", "name", f"{tag}s{i}")
            run("ip", "link", "set", f"{tag}v{i}", "netns", name)
            run("ip", "link", "set", f"{tag}s{i}", "netns", switch)
            run("ip", "-n", switch, "link", "set", f"{tag}s{i}", "master", "br0")
            run("ip", "-n", switch, "link", "set", f"{tag}s{i}", "up")
            run("ip", "-n", name, "addr", "add", f"10.231.7.{i + 1}/24", "dev", f"{tag}v{i}")
            run("ip", "-n", name, "link", "set", f"{tag}v{i}", "up")
            run("ip", "-n", name, "link", "set", "lo", "up")
        yield tag, names
    finally:
        for name in names + [switch]:
            run("ip", "netns", "del", name, check=False)


def start_agents(tmp_path, names, rounds):
    config = small_config(agents=AGENTS, rounds=rounds, eval_every=0)
    config.topology.kind = "complete"
    config.network.addresses = [f"tcp://10.231.7.{i + 1}:29400" for i in range(AGENTS)]
    config.network.round_timeout = 2.0
    # Off loopback plain links need an opt-in; these hosts talk CURVE, as a LAN run should, through the cut.
    config.security.mode, config.security.keys_dir = "curve", str(tmp_path / "keys")
    config.security.public_keys = generate_keys(tmp_path / "keys", AGENTS)
    save_config(config, tmp_path / "run.yaml")
    env = child_env()
    return [subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-m", "p2pfl.cli", "agent", "--config",
                              str(tmp_path / "run.yaml"), "--id", str(i), "--out", str(tmp_path / "run")],
                             cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=open(tmp_path / f"agent{i}.log", "w"), text=True)
            for i, name in enumerate(names)]


@functools.cache
def tail(tmp_path, agent):
    return MetricsTail(rundir.metrics_path(tmp_path / "run", agent))


def rows(tmp_path, agent):
    return tail(tmp_path, agent).rows()


def wait_rounds(tmp_path, agent, count, procs, timeout=120):
    deadline = time.monotonic() + timeout
    while len(rows(tmp_path, agent)) < count:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "agents stalled or died"
        time.sleep(0.1)


def stop_once_healed(tmp_path, procs, cut, timeout=180):
    """Wait until agent 0 and the cut agent both mix with every neighbour again after their time apart,
    then stop the run with SIGTERM (exit 143): no need to train out thousands of rounds to see the heal."""
    deadline = time.monotonic() + timeout
    try:
        while not (heard_phases(rows(tmp_path, 0))[1] and heard_phases(rows(tmp_path, cut))[1]):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "not healed, or an agent died"
            time.sleep(0.2)
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 143 for p in procs), [p.returncode for p in procs]  # stopped, not crashed


def heard_phases(history):
    """Rounds where a survivor heard only one neighbour, and whether it heard both again afterwards."""
    alone = [i for i, r in enumerate(history) if r["neighbours_heard"] < AGENTS - 1]
    return alone, bool(alone) and any(r["neighbours_heard"] == AGENTS - 1 for r in history[alone[-1] + 1:])


def test_a_cut_link_is_survived_and_healed(tmp_path, hosts):
    tag, names = hosts
    procs = start_agents(tmp_path, names, rounds=10**6)  # stopped once healed
    wait_rounds(tmp_path, 0, 50, procs)
    run("ip", "-n", names[1], "link", "set", f"{tag}v1", "down")
    before = len(rows(tmp_path, 0))
    wait_rounds(tmp_path, 0, before + 200, procs)  # the two others go on without agent 1
    run("ip", "-n", names[1], "link", "set", f"{tag}v1", "up")
    stop_once_healed(tmp_path, procs, cut=1)
    alone, healed = heard_phases(rows(tmp_path, 0))
    assert len(alone) >= 100 and healed


def test_an_iptables_partition_is_survived_and_healed(tmp_path, hosts):
    if not shutil.which("iptables"):
        pytest.skip("iptables is not installed")
    tag, names = hosts
    procs = start_agents(tmp_path, names, rounds=10**6)  # stopped once healed
    wait_rounds(tmp_path, 0, 50, procs)
    drop = ["ip", "netns", "exec", names[2], "iptables", "-A", "INPUT", "-j", "DROP"]
    try:
        run(*drop)
    except subprocess.CalledProcessError as exc:
        for p in procs:
            p.kill()
        pytest.skip(f"iptables does not work in a namespace here: {exc.stderr.strip()}")
    before = len(rows(tmp_path, 0))
    wait_rounds(tmp_path, 0, before + 200, procs)
    run("ip", "netns", "exec", names[2], "iptables", "-D", "INPUT", "-j", "DROP")
    stop_once_healed(tmp_path, procs, cut=2)
    alone, healed = heard_phases(rows(tmp_path, 0))
    assert len(alone) >= 100 and healed
