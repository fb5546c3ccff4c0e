"""Start the agents of a run as local OS processes (one each, or packed several per process: packing.py),
show progress, stop them all on any exit.

Children are forked from a forkserver that has imported torch once, so 16 agents start in about
a second instead of paying ~2.5 s of `import torch` each on a 2-core machine.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from p2pfl.agents import rundir
from p2pfl.agents.core_rotation import rotation_for
from p2pfl.agents.forkserver import forkserver_context
from p2pfl.agents.lifetime import ignore_stop_signals, interrupt_on_stop_signals
from p2pfl.agents.packing import worker_groups, worker_main
from p2pfl.agents.process import process_main
from p2pfl.agents.progress import RunProgress
from p2pfl.config import RunConfig
from p2pfl.errors import Diverged, UserError
from p2pfl.transport import check_ports_free

TERMINATE_GRACE_SECONDS = 5.0
POLL_SECONDS = 0.3  # progress and exit codes, read this often
FATAL_EXIT_CODES = (2, 3)  # a UserError (bad config, port in use, unreachable at start): the run cannot work


@dataclass
class Worker:
    """One launched OS process and the agents it hosts: one agent (its exit code is the process's), or several
    packed ones, each reporting its own code over `reports` as it ends."""
    process: BaseProcess
    agents: list[int]
    reports: Connection | None = None
    child_end: Connection | None = None  # the worker's end of `reports`, closed here once it is started
    codes: dict[int, int] = field(default_factory=dict)

    def start(self) -> None:
        self.process.start()
        if self.child_end is not None:
            self.child_end.close()  # else the pipe never reads as closed when the worker is gone

    def agent_codes(self) -> dict[int, int | None]:
        """Exit code of each of its agents, None while that agent runs; an agent that never reported takes the
        process's code (a worker killed by a signal: every agent it still ran died with it)."""
        exitcode = self.process.exitcode  # read before the pipe: whatever it sent before exiting is there now
        if self.reports is None:
            return {agent: exitcode for agent in self.agents}
        try:
            while self.reports.poll():
                agent, code = self.reports.recv()
                self.codes[agent] = code
        except (EOFError, OSError):  # the worker is gone; what it sent was read
            pass
        return {agent: self.codes.get(agent, exitcode) for agent in self.agents}


def start_workers(config: RunConfig, config_path: Path, run_dir: Path) -> list[Worker]:
    """network.agents_per_process 1: one process per agent (process_main), as named agents; more: packed
    workers (packing.worker_main). Not started yet."""
    context = forkserver_context()
    # Agents are children of the forkserver, not of this process: each watches this pid and stops when it
    # dies (a SIGKILLed launcher runs no cleanup; PDEATHSIG only fires when the forkserver goes).
    groups = worker_groups(config)
    if all(len(group) == 1 for group in groups):
        return [Worker(context.Process(target=process_main, args=(str(config_path), agent, str(run_dir), os.getpid()),
                                       name=f"p2pfl-agent-{agent}"), [agent]) for agent in range(config.agents)]
    workers = []
    for index, group in enumerate(groups):
        reports, child_end = context.Pipe(duplex=False)
        process = context.Process(target=worker_main, args=(str(config_path), group, index, str(run_dir), os.getpid(),
                                                            child_end), name=f"p2pfl-agent-w{index}")
        workers.append(Worker(process, group, reports, child_end))
    return workers


def launch_local(config: RunConfig, config_path: Path, run_dir: Path, show_progress: bool = True) -> list[int]:
    """Run every agent to the end; returns the ids of agents that died mid-run (their neighbours went on)."""
    check_ports_free(config)
    workers = start_workers(config, config_path, run_dir)
    processes = [worker.process for worker in workers]
    restore_signals = interrupt_on_stop_signals()  # SIGINT / SIGTERM: Interrupted, then the finally below
    rotation = None
    try:
        for worker in workers:
            worker.start()
        rotation = rotation_for([p.pid for p in processes], config.network.rotate_cores)
        died: dict[int, int] = {}

        def check() -> None:
            for worker in workers:
                for agent, code in worker.agent_codes().items():
                    raise_if_fatal(run_dir, agent, code)
                    if code not in (None, 0) and agent not in died:
                        died[agent] = code
                        progress.note(f"warning: {describe_failure(run_dir, agent, code)}; its neighbours go on "
                                      "without it")

        with RunProgress(config, run_dir, enabled=show_progress) as progress:
            while any(p.is_alive() for p in processes):
                progress.update()
                check()
                # woken at once by a worker's exit (the end of a run), else every POLL_SECONDS for the progress
                wait([p.sentinel for p in processes if p.is_alive()], timeout=POLL_SECONDS)
            progress.update()
            check()
        if len(died) == config.agents:
            raise UserError(describe_failure(run_dir, 0, died[0]))
        return sorted(died)
    finally:
        ignore_stop_signals()
        if rotation is not None:
            rotation.stop()
        stop_all(processes)
        restore_signals()


def raise_if_fatal(run_dir: Path, agent: int, code: int | None) -> None:
    """A diverged agent, or one that could not start, ends the run; a crashed one does not."""
    if code == Diverged.exit_code:  # the run cannot recover: stop everyone, say where it broke
        raise Diverged(error_text(run_dir, agent) or f"agent {agent} diverged")
    if code in FATAL_EXIT_CODES:
        raise UserError(describe_failure(run_dir, agent, code))


def error_text(run_dir: Path, agent: int) -> str | None:
    error = rundir.error_path(run_dir, agent)
    return error.read_text().strip() if error.exists() else None


def describe_failure(run_dir: Path, agent: int, code: int | None) -> str:
    reason = error_text(run_dir, agent) or (
        f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}")
    return f"agent {agent} failed: {reason} (log: {rundir.log_path(run_dir, agent)})"


def stop_all(processes: list) -> None:
    """SIGTERM, a grace period to close sockets, then SIGKILL: nothing outlives the launcher."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
    for process in processes:
        if process.pid is None:
            continue
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
