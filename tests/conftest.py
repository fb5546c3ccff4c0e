"""Shared helpers: free loopback ports, small configs, and a guard that no agent process leaks."""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from p2pfl.agents.process import PROCESS_NAME_PREFIX
from p2pfl.config import RunConfig
from p2pfl.data.cache import CACHE_ENV

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    """benchmarks/NAME.py as a module (the folder is not a package; each script puts itself on sys.path)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out on 127.0.0.1 (held together so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        pid = parent_of(pid)
    return False


# Every process this session starts inherits this variable: an agent whose launcher was killed is
# reparented away from pytest, yet its environment still says it is ours. Agents of other sessions on
# the same machine (a benchmark beside the tests) carry another value and are never touched. Each
# pytest-xdist worker is a session of its own: it inherits the controller's value and must replace it,
# or one worker's leak check would count (and kill) the agents of a test running on the other.
SESSION_MARKER = "P2PFL_TEST_SESSION"
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if not os.environ.get(SESSION_MARKER, "").endswith(f"-{XDIST_WORKER}"):
    os.environ[SESSION_MARKER] = f"{os.getpid()}-{time.time_ns()}-{XDIST_WORKER}"
# The session's own dataset cache (p2pfl.data.cache), removed at the end: tests never read a user's entries.
# Made once per process (a test that imports tests.conftest again runs this module twice) and removed when that
# process exits too: a child a test starts with `python -c` that imports a test module runs it as well, with no
# session to finish. Each run of the suite used to leave such folders in /tmp.
_OWN_CACHE_PREFIX = f"p2pfl-test-cache-{os.getpid()}-"
if not os.path.basename(os.environ.get(CACHE_ENV, "")).startswith(_OWN_CACHE_PREFIX):
    os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix=_OWN_CACHE_PREFIX)
    atexit.register(shutil.rmtree, os.environ[CACHE_ENV], True)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get(CACHE_ENV, "").startswith(tempfile.gettempdir()):
        shutil.rmtree(os.environ[CACHE_ENV], ignore_errors=True)


def started_by_this_session(pid: int) -> bool:
    if descends_from(pid, os.getpid()):
        return True
    marker = f"{SESSION_MARKER}={os.environ[SESSION_MARKER]}".encode()
    return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def agent_pids() -> list[int]:
    """Live agent processes started by this test session, found by name (set with prctl at start), then
    told ours by ancestry or by the session marker in their environment (orphans are reparented)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().startswith(PROCESS_NAME_PREFIX):
                    state = (entry / "stat").read_text().split(")")[-1].split()[0]
                    if state != "Z" and started_by_this_session(int(entry.name)):
                        pids.append(int(entry.name))
            except (OSError, ValueError):
                continue
    return pids


def small_config(agents: int = 4, rounds: int = 12, **changes) -> RunConfig:
    config = RunConfig(name="test", agents=agents, rounds=rounds, eval_every=0, model="mlp")
    config.network.addresses = [f"tcp://127.0.0.1:{p}" for p in free_ports(agents)]
    config.network.round_timeout = 20.0
    config.network.startup_timeout = 60.0
    for key, value in changes.items():
        target = config
        *path, last = key.split("__")
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)
    return config


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child interpreter: this checkout first on its path, what was there kept
    (packages a machine provides through PYTHONPATH, such as pyzmq beside a system PyTorch)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def run_cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`p2pfl ARGS` in a fresh interpreter, as a user runs it."""
    env = child_env()
    return subprocess.run([sys.executable, "-m", "p2pfl.cli", *args], cwd=kwargs.pop("cwd", ROOT), env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture
def no_leaked_agents():
    """Fails the test if it leaves an agent process behind, and kills what it left."""
    before = set(agent_pids())
    yield
    deadline = time.monotonic() + 10
    leaked = set(agent_pids()) - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.2)
        leaked = set(agent_pids()) - before
    for pid in leaked:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    assert not leaked, f"agent processes left running: {sorted(leaked)}"


def run_agents_by_hand(config_path, agents: int, out, timeout: float = 180) -> list[tuple[str, str]]:
    """`p2pfl agent --id i` for every agent, as a user starts them on separate machines; (stdout, stderr) each,
    after asserting every agent exited 0. Every process is killed even on failure."""
    procs = [subprocess.Popen([sys.executable, "-m", "p2pfl.cli", "agent", "--config", str(config_path), "--id",
                               str(i), "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(agents)]
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), outputs
    return outputs


class MetricsTail:
    """An agent's metrics rows, read on from where the last call stopped: a live run's file grows by
    thousands of rounds, and re-parsing it all several times a second costs the agents the CPU they need."""

    def __init__(self, path: Path):
        self.path, self.offset, self.done = Path(path), 0, []

    def rows(self) -> list[dict]:
        if self.path.exists():
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
            complete = chunk[:chunk.rfind(b"\n") + 1]  # the last line may be half written
            self.offset += len(complete)
            self.done.extend(json.loads(line) for line in complete.splitlines())
        return self.done
