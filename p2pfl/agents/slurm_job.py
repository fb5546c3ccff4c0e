"""A submitted Slurm job: sbatch, its state from squeue while queued or running, its end from sacct.

Only Slurm's own command-line clients are used (the same a user types on a login node), so any Slurm
that the user can reach works. sacct needs accounting; without it the end state comes from
`scontrol show job` (which Slurm keeps for MinJobAge seconds after the end, 300 by default).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

from p2pfl.agents.lifetime import ignore_stop_signals, interrupt_on_stop_signals
from p2pfl.errors import UserError

POLL_SECONDS = 2.0
CLIENT_TIMEOUT = 60  # a slurmctld that answers no client in this long is treated as an error
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "STAGE_OUT"}


def _slurm(*command: str) -> subprocess.CompletedProcess:
    if shutil.which(command[0]) is None:
        raise UserError(f"{command[0]} not found: run `p2pfl slurm` on a machine with the Slurm clients (a login "
                        "node), or use --dry-run to print the script")
    return subprocess.run(list(command), capture_output=True, text=True, timeout=CLIENT_TIMEOUT)


def submit(script: Path) -> str:
    """`sbatch --parsable SCRIPT`; returns the job id."""
    done = _slurm("sbatch", "--parsable", str(script))
    if done.returncode:
        raise UserError(f"sbatch refused the job: {done.stderr.strip() or done.stdout.strip()}; the script is {script}")
    return done.stdout.strip().split(";")[0]  # "<id>" or "<id>;<cluster>"


def queue_state(job: str) -> tuple[str, str] | None:
    """(state, reason or node list) while squeue lists the job; None once it has left the queue."""
    done = _slurm("squeue", "--noheader", "--jobs", job, "--format", "%T|%R")
    if done.returncode or not done.stdout.strip():  # squeue says "Invalid job id" once the job is purged
        return None
    state, _, where = done.stdout.strip().splitlines()[0].partition("|")
    return state, where.strip("()")  # squeue writes a pending job's reason in parentheses


def end_state(job: str) -> tuple[str, str]:
    """(state, exit code) of a job that has left the queue, e.g. ("COMPLETED", "0:0")."""
    done = _slurm("sacct", "--jobs", job, "--allocations", "--noheader", "--parsable2", "--format", "State,ExitCode")
    if done.returncode == 0 and done.stdout.strip():
        state, _, code = done.stdout.strip().splitlines()[0].partition("|")
        return state.split()[0], code
    shown = _slurm("scontrol", "show", "job", "--oneliner", job)
    fields = dict(item.split("=", 1) for item in shown.stdout.split() if "=" in item)
    return fields.get("JobState", "UNKNOWN"), fields.get("ExitCode", "?")


def cancel(job: str) -> None:
    _slurm("scancel", job)


def wait_for(job: str, report: Callable[[str], None], poll: float = POLL_SECONDS) -> tuple[str, str]:
    """Poll until the job leaves the queue, reporting each change of state; returns its end state. Ctrl-C
    (or any error) cancels the job, so no allocation is left running for nothing."""
    seen = None
    restore_signals = interrupt_on_stop_signals()  # SIGTERM too: Interrupted, then scancel below
    try:
        while (state := queue_state(job)) is not None and state[0] in ACTIVE:
            if state != seen:
                report(f"job {job}: {state[0].lower()} ({state[1]})")
                seen = state
            time.sleep(poll)
    except BaseException:
        ignore_stop_signals()  # a second Ctrl-C must not cut the cancellation short
        cancel(job)
        raise
    finally:
        restore_signals()
    return end_state(job)
