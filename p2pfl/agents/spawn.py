"""`p2pfl spawn`: start a run's agents on LAN hosts over the machine's OpenSSH client.

The user's own ssh keys and config do the authentication (BatchMode: never a password prompt).
Agent ids are handed out to the hosts in order; each agent binds its host's address. Output is
streamed back with an `[agent N]` prefix; on Ctrl-C or a failure every remote agent is stopped
(the ssh sessions have a tty, so closing them hangs up the remote processes); at the end each
host's agent folders are copied back into one local run folder.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from p2pfl.config import RunConfig, _build, save_config
from p2pfl.errors import UserError
from p2pfl.security import refuse_plain_off_loopback


@dataclass
class Host:
    address: str  # what ssh connects to (a name from ~/.ssh/config works too)
    agents: int = 1
    user: str | None = None
    port: int | None = None
    bind: str | None = None  # the address agents on this host bind and announce (default: address)
    python: str = "python3"  # the interpreter with p2pfl installed, e.g. /opt/p2pfl/.venv/bin/python
    workdir: str = "p2pfl-runs"
    ssh_options: list[str] = field(default_factory=list)


@dataclass
class HostsFile:
    hosts: list[Host] = field(default_factory=list)


def load_hosts(path: str | Path) -> list[Host]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"hosts file {path} does not exist; see examples/hosts.yaml")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {exc}") from None
    hosts = _build(HostsFile, data, "hosts file").hosts
    hosts = [_build(Host, h, f"hosts[{i}]") if isinstance(h, dict) else h for i, h in enumerate(hosts)]
    if not hosts:
        raise UserError(f"{path} lists no hosts")
    return hosts


def assign(config: RunConfig, hosts: list[Host]) -> list[Host]:
    """Host of each agent id, and the config's addresses rewritten to the hosts' bind addresses."""
    owners = [host for host in hosts for _ in range(host.agents)]
    if len(owners) != config.agents:
        raise UserError(f"the hosts file runs {len(owners)} agents but the config has {config.agents}; "
                        "change the hosts' `agents` counts or --agents")
    config.network.addresses = [f"tcp://{host.bind or host.address}:{config.network.base_port + i}"
                                for i, host in enumerate(owners)]
    return owners


def ssh_base(host: Host, tty: bool = False) -> list[str]:
    command = ["ssh", "-o", "BatchMode=yes", *host.ssh_options]
    if tty:
        command.append("-tt")
    if host.port:
        command += ["-p", str(host.port)]
    return command + [f"{host.user}@{host.address}" if host.user else host.address]


def remote_dir(host: Host, run_name: str) -> str:
    return f"{host.workdir}/{run_name}"


def upload_command(host: Host, run_name: str) -> list[str]:
    folder = shlex.quote(remote_dir(host, run_name))
    return ssh_base(host) + [f"mkdir -p {folder} && cat > {folder}/config.yaml"]


def agent_command(host: Host, run_name: str, agent: int) -> list[str]:
    folder = shlex.quote(remote_dir(host, run_name))
    return ssh_base(host, tty=True) + [f"exec {shlex.quote(host.python)} -m p2pfl.cli agent --config "
                                       f"{folder}/config.yaml --id {agent} --out {folder}"]


def collect_command(host: Host, run_name: str, agents: list[int]) -> list[str]:
    folder = shlex.quote(remote_dir(host, run_name))
    return ssh_base(host) + [f"tar -C {folder} -cf - " + " ".join(f"agents/{a:03d}" for a in agents)]


def _stream(agent: int, pipe, sink) -> None:
    for line in iter(pipe.readline, ""):
        sink.write(f"[agent {agent}] {line.rstrip()}\n")
        sink.flush()


def spawn(config: RunConfig, hosts: list[Host], run_dir: Path, run_name: str, dry_run: bool = False) -> list[str]:
    """Run every agent on its host; returns the printed commands (the plan, for --dry-run)."""
    owners = assign(config, hosts)
    refuse_plain_off_loopback(config, range(config.agents))
    config.run_id = config.resolved_run_id()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    distinct = list(dict.fromkeys(id(h) for h in owners))
    by_host = {hid: next(h for h in owners if id(h) == hid) for hid in distinct}
    agents_of = {hid: [a for a, h in enumerate(owners) if id(h) == hid] for hid in distinct}
    plan = [shlex.join(upload_command(h, run_name)) + f" < {run_dir / 'config.yaml'}" for h in by_host.values()]
    plan += [shlex.join(agent_command(owners[a], run_name, a)) for a in range(config.agents)]
    plan += [shlex.join(collect_command(by_host[hid], run_name, agents_of[hid])) + f" | tar -C {run_dir} -xf -"
             for hid in distinct]
    if dry_run:
        return plan
    for host in by_host.values():
        with open(run_dir / "config.yaml", "rb") as handle:
            done = subprocess.run(upload_command(host, run_name), stdin=handle, capture_output=True, timeout=60)
        if done.returncode:
            raise UserError(f"cannot reach {host.address} over ssh: {done.stderr.decode().strip()}; check "
                            "`ssh -o BatchMode=yes` to it works with your keys")
    processes: list[subprocess.Popen] = []
    threads = []
    try:
        for agent in range(config.agents):
            process = subprocess.Popen(agent_command(owners[agent], run_name, agent), stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            processes.append(process)
            thread = threading.Thread(target=_stream, args=(agent, process.stdout, sys.stdout), daemon=True)
            thread.start()
            threads.append(thread)
        for agent, process in enumerate(processes):
            if process.wait() != 0:
                raise UserError(f"agent {agent} on {owners[agent].address} failed (exit {process.returncode}); "
                                "its output is above")
        for thread in threads:
            thread.join(5)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()  # the ssh session closes, the remote tty hangs up, the agent gets SIGHUP
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    for hid in distinct:
        tar = subprocess.run(collect_command(by_host[hid], run_name, agents_of[hid]), capture_output=True, timeout=300)
        if tar.returncode:
            raise UserError(f"cannot copy the agents' folders back from {by_host[hid].address}: "
                            f"{tar.stderr.decode().strip()}")
        subprocess.run(["tar", "-C", str(run_dir), "-xf", "-"], input=tar.stdout, check=True)
    return plan
