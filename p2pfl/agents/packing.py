"""Packing: several agents as threads of one worker process, for machines with fewer cores than agents.

Each packed agent keeps what it has in a process of its own: its ZmqExchange, sockets and keys (nothing
changes on the wire), its log file, error file and metrics. What the agents of a worker share is the run's
setup (the data set mapped once), torch's libraries (their pages are what most of an agent process's memory
is), one ZeroMQ context (one I/O thread; neighbours packed together talk over inproc://, no TCP, no
encryption, the same frames and validation) and the worker's signals: SIGTERM, or the launcher's death, stops them
all. Each agent's exit code goes to the launcher over a pipe as the agent ends, so the launcher still
reports which agent died and stops the run on a diverged one, as with one process per agent.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable

import torch

from p2pfl.agents import rundir
from p2pfl.agents.agent_logs import AgentRoutedLogs
from p2pfl.agents.lifetime import watch_launcher
from p2pfl.agents.process import (PROCESS_NAME_PREFIX, StartLine, WorkerShare, die_with_parent, name_thread,
                                  run_agent)
from p2pfl.agents.setup import prepare
from p2pfl.config import RunConfig, load_config
from p2pfl.errors import UserError
from p2pfl.hub import Hub
from p2pfl.transport import ProcessLinks

PROCESSES_PER_CORE = 1  # auto packing: one worker process per core (neighbours in a worker talk over inproc://)
STOP_GRACE_SECONDS = 3.0  # after SIGTERM, agents close their sockets; the launcher SIGKILLs after 5 s


def agents_per_process(config: RunConfig, cores: int | None = None) -> int:
    """network.agents_per_process, with 0 (auto) resolved to ceil(agents / (PROCESSES_PER_CORE x cores))."""
    per = config.network.agents_per_process
    if per == 0:
        per = math.ceil(config.agents / (PROCESSES_PER_CORE * (cores or os.cpu_count() or 1)))
    return max(1, min(per, config.agents))


def worker_groups(config: RunConfig, cores: int | None = None) -> list[list[int]]:
    """Agent ids of each worker process: consecutive ids (ring neighbours share a worker), as even as can be,
    at most agents_per_process each."""
    workers = math.ceil(config.agents / agents_per_process(config, cores))
    size, extra = divmod(config.agents, workers)
    groups, start = [], 0
    for worker in range(workers):
        end = start + size + (worker < extra)
        groups.append(list(range(start, end)))
        start = end
    return groups


def run_packed(config: RunConfig, agents: list[int], run_dir: Path, stop: threading.Event,
               report: Callable[[int, int], None]) -> dict[int, int]:
    """Run `agents` as threads of this process until they end or `stop` is set (then at most
    STOP_GRACE_SECONDS more); `report(agent, exit code)` as each one ends. Returns the codes known."""
    worker_lines = logging.StreamHandler(sys.stderr)  # the worker's own lines, and any thread's not an agent's
    worker_lines.setFormatter(logging.Formatter("%(asctime)s worker %(levelname)s %(name)s: %(message)s"))
    logs = AgentRoutedLogs(worker_lines).install()
    codes: dict[int, int] = {}
    try:
        setup = prepare(config)  # once per worker: the setup (data set, graph) is read-only for the agents
    except UserError as exc:
        for agent in agents:
            rundir.agent_dir(run_dir, agent).mkdir(parents=True, exist_ok=True)
            rundir.error_path(run_dir, agent).write_text(str(exc))
            codes[agent] = exc.exit_code
            report(agent, exc.exit_code)
        return codes
    shared = WorkerShare(setup, stop, logs, ProcessLinks(setup.run_id, agents), StartLine(agents))

    def body(agent: int) -> None:
        codes[agent] = run_agent(config, agent, run_dir, shared=shared)
        report(agent, codes[agent])

    if config.network.scheduler == "greenlets":  # every agent a greenlet of one thread (hub.py)
        shared.turn = hub = Hub()
        threads = [threading.Thread(target=hub.run, args=([lambda agent=agent: body(agent) for agent in agents],),
                                    name="agents", daemon=True)]
    else:  # a thread per agent, named after it in ps -T
        def named_body(agent: int) -> None:
            name_thread(f"{PROCESS_NAME_PREFIX}{agent}")
            body(agent)

        threads = [threading.Thread(target=named_body, args=(agent,), name=f"agent-{agent}", daemon=True)
                   for agent in agents]
    for thread in threads:
        thread.start()
    deadline = None
    while alive := [thread for thread in threads if thread.is_alive()]:
        if stop.is_set():
            deadline = deadline or time.monotonic() + STOP_GRACE_SECONDS
            if time.monotonic() > deadline:
                break
        alive[0].join(0.2)  # one at a time: the stop is seen within 0.2 s however many agents are packed
    if not any(thread.is_alive() for thread in threads):  # else an agent still holds sockets: term would wait
        shared.links.close()
    return codes


def worker_main(config_path: str, agents: list[int], worker: int, run_dir: str, launcher_pid: int | None,
                reports: Connection) -> None:
    """Target of a launched packed worker: named p2pfl-agent-wK, dies with the launcher like an agent process;
    its own output goes to RUN/workers/K.log, its agents' to their agent.log."""
    die_with_parent(f"w{worker}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher handles Ctrl-C and stops us with SIGTERM
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # agents see it at their next wait or round
    path = rundir.worker_log_path(Path(run_dir), worker)
    path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(path, "a")
    os.dup2(log_file.fileno(), 1)
    os.dup2(log_file.fileno(), 2)
    if launcher_pid is not None:
        watch_launcher(launcher_pid)
    torch.set_num_threads(1)
    lock = threading.Lock()

    def report(agent: int, code: int) -> None:
        with lock:  # one Connection, written from every agent thread
            try:
                reports.send((agent, code))
            except OSError:  # the launcher is gone; watch_launcher stops us
                pass

    codes = run_packed(load_config(config_path), agents, Path(run_dir), stop, report)
    sys.stdout.flush()
    sys.stderr.flush()
    # The launcher reads each agent's code from the pipe; the worker's own only says whether all went well.
    if stop.is_set():
        os._exit(143)
    os._exit(next((code for code in codes.values() if code), 0) if len(codes) == len(agents) else 1)
