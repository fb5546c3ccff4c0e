"""`p2pfl spawn` over a real OpenSSH server on 127.0.0.1 with throwaway keys (skipped without sshd/root)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from p2pfl.agents.spawn import Host, assign, spawn
from p2pfl.config import save_config
from p2pfl.errors import UserError
from tests.conftest import free_ports, run_cli, small_config

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def test_dry_run_prints_the_exact_commands_and_rewrites_addresses(tmp_path):
    config = small_config(agents=3)
    hosts = [Host("10.0.0.5", agents=2, user="alice", python="/opt/venv/bin/python"), Host("lab2", agents=1)]
    with pytest.raises(UserError, match="pose as an agent"):  # LAN addresses: plain links only when chosen by name
        spawn(config, hosts, tmp_path / "run", "r1", dry_run=True)
    config.security.mode = "none"
    plan = spawn(config, hosts, tmp_path / "run", "r1", dry_run=True)
    assert config.network.addresses == [f"tcp://10.0.0.5:{config.network.base_port}",
                                        f"tcp://10.0.0.5:{config.network.base_port + 1}",
                                        f"tcp://lab2:{config.network.base_port + 2}"]
    assert plan[2] == ("ssh -o BatchMode=yes -tt alice@10.0.0.5 'exec /opt/venv/bin/python -m p2pfl.cli agent "
                       "--config p2pfl-runs/r1/config.yaml --id 0 --out p2pfl-runs/r1'")
    assert any(line.startswith("ssh -o BatchMode=yes lab2 'tar -C p2pfl-runs/r1 -cf - agents/002'") for line in plan)
    with pytest.raises(UserError, match="runs 2 agents but the config has 3"):
        assign(small_config(agents=3), [Host("a", agents=2)])


@pytest.fixture
def sshd(tmp_path):
    if os.geteuid() != 0 or not Path(SSHD).exists() or not shutil.which("ssh"):
        pytest.skip("needs root, an OpenSSH server (apt-get install openssh-server) and the ssh client")
    keys = tmp_path / "ssh"
    keys.mkdir()
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    (keys / "authorized_keys").write_text((keys / "client.pub").read_text())
    port = free_ports(1)[0]
    (keys / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\nAuthorizedKeysFile {keys / 'authorized_keys'}\n"
        f"PidFile {keys / 'sshd.pid'}\nStrictModes no\nPermitRootLogin yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(keys / "sshd_config")], stderr=subprocess.PIPE)
    options = ["-i", str(keys / "client"), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "LogLevel=ERROR"]
    deadline = time.monotonic() + 20
    while subprocess.run(["ssh", "-o", "BatchMode=yes", *options, "-p", str(port), "root@127.0.0.1", "true"],
                         capture_output=True).returncode:
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            pytest.skip(f"sshd did not start: {server.stderr.read().decode()[-300:] if server.stderr else ''}")
        time.sleep(0.3)
    yield port, options
    server.terminate()
    server.wait(10)


def test_spawn_over_ssh_runs_collects_and_summarizes(tmp_path, sshd, no_leaked_agents):
    port, options = sshd
    config = small_config(agents=3, rounds=10)
    config.network.addresses = None
    config.network.base_port = free_ports(1)[0] % 20000 + 20000
    save_config(config, tmp_path / "run.yaml")
    host = {"address": "127.0.0.1", "user": "root", "port": port, "python": sys.executable,
            "workdir": str(tmp_path / "remote"), "ssh_options": options}
    (tmp_path / "hosts.yaml").write_text(yaml.safe_dump({"hosts": [{**host, "agents": 2}, {**host, "agents": 1}]}))
    result = run_cli("spawn", str(tmp_path / "run.yaml"), "--hosts", str(tmp_path / "hosts.yaml"),
                     "--out", str(tmp_path / "collected"))
    assert result.returncode == 0, result.stderr + result.stdout
    assert "[agent 2]" in result.stdout and "consensus model" in result.stdout
    summary = json.loads((tmp_path / "collected" / "summary.json").read_text())
    assert summary["agents_finished"] == 3 and summary["mode"] == "spawn"
    assert (tmp_path / "remote" / "collected" / "agents" / "000" / "metrics.jsonl").exists()  # ran over there


def test_spawn_summarizes_a_coordinator_method_like_run_and_report(tmp_path, monkeypatch):
    """In-process stand-in for the hosts (the ssh path is tested above): the agents of a coordinator method
    run where spawn would start them, and spawn summarizes the coordinator's records, as `run` does."""
    from click.testing import CliRunner

    from p2pfl.agents.setup import prepare
    from p2pfl.agents.simulate import run_simulation
    from p2pfl.cli.main import cli
    from p2pfl.config import load_config
    from tests.conftest import ROOT

    def run_here(config, hosts, run_dir, run_name, dry_run=False):
        run_dir.mkdir(parents=True, exist_ok=True)
        run_simulation(prepare(config), run_dir)
        return []

    monkeypatch.setattr("p2pfl.agents.spawn.spawn", run_here)
    config = load_config(ROOT / "examples" / "fedavg_rotated.yaml")
    config.agents, config.rounds = 5, 2
    config.options["local_epochs"] = 1
    save_config(config, tmp_path / "run.yaml")
    (tmp_path / "hosts.yaml").write_text(yaml.safe_dump({"hosts": [{"address": "lab1", "agents": 5}]}))
    result = CliRunner().invoke(cli, ["spawn", str(tmp_path / "run.yaml"), "--hosts", str(tmp_path / "hosts.yaml"),
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["algorithm"] == "fedavg" and summary["clients"] == 4
    assert summary["rounds_logged"] == [0, 1, 2] and summary["final_accuracy"] > 0.1
    assert "ARI" in result.output and (tmp_path / "run" / "curves.png").exists()


def test_set_overrides_reach_every_host_in_the_shipped_config(tmp_path):
    """`--set` is applied once, before the upload: the config.yaml every host receives is the resolved one,
    and the remote agents get no --set of their own (so they cannot disagree)."""
    from click.testing import CliRunner

    from p2pfl.cli.main import cli
    from p2pfl.config import load_config

    config = small_config(agents=3)
    config.security.mode = "none"
    save_config(config, tmp_path / "run.yaml")
    hosts = [{"address": "10.0.0.5", "agents": 2}, {"address": "lab2", "agents": 1}]
    (tmp_path / "hosts.yaml").write_text(yaml.safe_dump({"hosts": hosts}))
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["spawn", str(tmp_path / "run.yaml"), "--hosts", str(tmp_path / "hosts.yaml"),
                                      "--out", str(run), "--dry-run", "--set", "optim.lr=0.05",
                                      "--set", "topology=torus", "--set", "rounds=7"])
    assert result.exit_code == 0, result.output
    shipped = load_config(run / "config.yaml")
    assert shipped.optim.lr == 0.05 and shipped.topology.kind == "torus" and shipped.rounds == 7
    uploads = [line for line in result.output.splitlines() if "cat >" in line]
    assert len(uploads) == 2 and all(line.endswith(f"< {run / 'config.yaml'}") for line in uploads)
    agents = [line for line in result.output.splitlines() if " agent --config " in line]
    assert len(agents) == 3 and not any("--set" in line for line in agents)
    bad = CliRunner().invoke(cli, ["spawn", str(tmp_path / "run.yaml"), "--hosts", str(tmp_path / "hosts.yaml"),
                                   "--out", str(tmp_path / "bad"), "--dry-run", "--set", "optim.lr=fast"])
    assert bad.exit_code != 0 and "optim.lr" in bad.output
