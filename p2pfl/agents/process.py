"""Entry point of one agent OS process: ZeroMQ exchange, logs to its folder, clean exit always.

`run_agent` also runs each agent thread of a packed worker (packing.py)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch

from p2pfl import turn
from p2pfl.agents import rundir
from p2pfl.agents.agent import Stopped
from p2pfl.agents.allocator import keep_freed_memory
from p2pfl.agents.agent_logs import AgentRoutedLogs, configure_logging
from p2pfl.agents.lifetime import watch_launcher
from p2pfl.agents.roles import build_loop
from p2pfl.agents.setup import RunSetup, prepare
from p2pfl.config import RunConfig, load_config
from p2pfl.errors import Diverged, UserError
from p2pfl.security import CurveKeys, refuse_plain_off_loopback
from p2pfl.transport import ProcessLinks, ZmqExchange
from p2pfl.turn import Scheduler, Turn

PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1
PROCESS_NAME_PREFIX = "p2pfl-agent-"


def die_with_parent(name: int | str) -> None:
    """Linux: get SIGTERM when our parent dies (for a launched agent that is the forkserver, which may
    outlive the launcher: lifetime.watch_launcher covers the launcher itself); name the process
    p2pfl-agent-NAME (an agent id, or wK for a packed worker), which is how tests and benchmarks find it."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        name_thread(f"{PROCESS_NAME_PREFIX}{name}")
    except OSError:
        pass


def name_thread(name: str) -> None:
    """The calling thread's name in ps/top (-H); the main thread's is the process's. Linux keeps 15 bytes."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_NAME, name.encode()[:15])
    except OSError:
        pass


# Agents of one process are built one at a time: model initialisation seeds the process-wide torch RNG
# (fork_rng + manual_seed), so two agents built at once would draw each other's numbers.
BUILD_LOCK = threading.Lock()


class StartLine:
    """The agents of a packed worker start their rounds together, once every one of them is built. An agent
    that runs rounds while its mates are still being built takes the CPU and the GIL from the building
    (256 agents in 2 workers: the last agents came up 33 s after launch, and the local-only floor's 110 s)."""

    def __init__(self, agents: Iterable[int]):
        self._waiting = set(agents)
        self._lock = threading.Lock()
        self._all = threading.Event()

    def arrive(self, agent: int) -> None:
        """Built, or failed to build: either way not to be waited for."""
        with self._lock:
            self._waiting.discard(agent)
            if not self._waiting:
                self._all.set()

    def wait(self, stop: threading.Event) -> None:
        while not self._all.is_set() and not stop.is_set():
            if turn.current() is None:  # a thread of its own
                self._all.wait(0.2)
            else:  # a hub's greenlet: its mates must get to build meanwhile
                turn.sleep(0.01)


@dataclass
class WorkerShare:
    """What the agents packed in one worker process share: the run's setup (the data set mapped once), the
    event its SIGTERM handler sets to stop them all, the router that keeps their log files apart, one
    ZeroMQ context over which mates that are neighbours talk in-process, and the turn they compute in."""
    setup: RunSetup
    stop: threading.Event
    logs: AgentRoutedLogs
    links: ProcessLinks
    start_line: StartLine
    turn: Scheduler = field(default_factory=Turn)  # one agent computes at a time: a worker is sized to a core


def ending(exc: UserError | Stopped, agent_id: int, *, stopped: bool, terminated: bool) -> tuple[Exception, int]:
    """What an agent that ended on `exc` reports, and its exit code: 143 whenever SIGTERM reached it (as a shell
    reports a process it killed), 130 for any other stop, the error's own code otherwise. SIGTERM's exception
    can be swallowed where Python ignores one (a zmq Frame's dealloc); the agent loop then notices the stop
    at its next round and raises a plain Stopped, which must still read as terminated."""
    if isinstance(exc, Diverged) or not (stopped or terminated):
        return exc, getattr(exc, "exit_code", 130)
    if terminated:
        return (exc if isinstance(exc, Stopped) else Stopped(f"agent {agent_id} terminated")), 143
    return (exc if isinstance(exc, Stopped) else Stopped(f"agent {agent_id} stopped")), 130


def run_agent(config: RunConfig, agent_id: int, run_dir: Path, *, log_to_file: bool = True,
              resume: bool = False, shared: WorkerShare | None = None) -> int:
    """Run one agent to the end; returns an exit code (0 ok, UserError's code otherwise). With `shared`
    it is one thread of a packed worker; otherwise it owns its process (and its logging)."""
    torch.set_num_threads(1)  # 2 cores shared by many agents: more threads only contend
    keep_freed_memory()
    directory = rundir.agent_dir(run_dir, agent_id)
    directory.mkdir(parents=True, exist_ok=True)
    log_path = rundir.log_path(run_dir, agent_id) if log_to_file else None
    if shared is not None:
        shared.logs.attach(log_path, agent_id)
    else:
        configure_logging(log_path, agent_id)
    stop = shared.stop if shared is not None else threading.Event()

    terminated = threading.Event()  # SIGTERM reached this agent: exit 143, as a shell reports a process it killed

    def terminated_error() -> Stopped:
        error = Stopped(f"agent {agent_id} terminated")
        error.exit_code = 143
        return error

    def terminate(*_: object) -> None:  # interrupts any wait, so the finally below closes the sockets
        terminated.set()
        stop.set()  # and if the raise lands where Python ignores it (a zmq Frame's dealloc), this still ends the run
        raise terminated_error()

    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if on_main else None
    exchange = None
    logging.getLogger("p2pfl").info("agent %s starting (pid %s)", agent_id, os.getpid())
    try:
        if not 0 <= agent_id < config.agents:
            raise UserError(f"--id {agent_id} is out of range: this run has agents 0..{config.agents - 1}")
        with BUILD_LOCK:
            setup = shared.setup if shared is not None else prepare(config)
            neighbours = {j: config.address(j) for j in setup.graph[agent_id]}
            refuse_plain_off_loopback(config, [agent_id, *neighbours])
            curve = None
            if config.security.mode == "curve":
                curve = CurveKeys.load(config.security.keys_dir, agent_id, config.security.public_keys,
                                       list(neighbours))
            exchange = ZmqExchange(agent_id, config.address(agent_id), neighbours, setup.run_id,
                                   config.network.round_timeout, curve=curve,
                                   max_message_bytes=int(config.network.max_message_mb * 2**20),
                                   round_window=setup.round_window, shared_memory=config.network.shared_memory,
                                   host_channel=config.network.host_channel,
                                   stopping=stop, links=shared.links if shared is not None else None)
            loop = build_loop(setup, agent_id, exchange, run_dir, stop=stop, resume=resume)
        if shared is not None:
            shared.start_line.arrive(agent_id)
            shared.start_line.wait(stop)
            with shared.turn.held():
                loop.run()
        else:
            loop.run()
        logging.getLogger("p2pfl").info("finished %s rounds", config.rounds)
        return 0
    except (UserError, Stopped) as exc:
        exc, code = ending(exc, agent_id, stopped=stop.is_set(), terminated=terminated.is_set())
        rundir.error_path(run_dir, agent_id).write_text(str(exc))
        logging.getLogger("p2pfl").error("%s", exc)
        return code
    except KeyboardInterrupt:
        rundir.error_path(run_dir, agent_id).write_text("interrupted")
        return 130
    except BaseException as exc:
        rundir.error_path(run_dir, agent_id).write_text(f"{type(exc).__name__}: {exc}")
        logging.getLogger("p2pfl").exception("agent crashed")
        return 1
    finally:
        if shared is not None:
            shared.start_line.arrive(agent_id)  # one that failed to build holds nobody up
        if exchange is not None:
            exchange.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if shared is not None:
            shared.logs.detach()


def process_main(config_path: str, agent_id: int, run_dir: str, launcher_pid: int | None = None) -> None:
    """Target of a launched child: own session of logs, dies with the launcher."""
    die_with_parent(agent_id)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher handles Ctrl-C and stops us with SIGTERM
    rundir.agent_dir(Path(run_dir), agent_id).mkdir(parents=True, exist_ok=True)
    log_file = open(rundir.log_path(Path(run_dir), agent_id), "a")
    os.dup2(log_file.fileno(), 1)
    os.dup2(log_file.fileno(), 2)
    if launcher_pid is not None:
        watch_launcher(launcher_pid)
    code = run_agent(load_config(config_path), agent_id, Path(run_dir))
    sys.stdout.flush()
    os._exit(code)
