"""Process lifetime: the launcher stops every agent on SIGINT/SIGTERM; an agent stops when its launcher dies."""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
from typing import Callable

from p2pfl import run_files
from p2pfl.errors import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def interrupt_on_stop_signals() -> Callable[[], None]:
    """SIGINT and SIGTERM raise Interrupted in the launcher whatever the inherited disposition (a background
    job starts with SIGINT ignored, and Python then installs no Ctrl-C handler), so its `finally` stops every
    agent. Returns the function that puts the previous handlers back."""
    def interrupt(signum: int, _frame: object) -> None:
        ignore_stop_signals()  # a second Ctrl-C must not cut the stop short
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in STOP_SIGNALS}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def ignore_stop_signals() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


LAUNCHER_GONE_GRACE_SECONDS = 5.0


def watch_launcher(launcher_pid: int) -> None:
    """Stop this agent when the launcher dies, however it dies (SIGKILL included).

    Agents are forked from the forkserver, so PDEATHSIG is armed against the forkserver, which may
    outlive the launcher. A pidfd becomes readable when the launcher exits: then SIGTERM ourselves
    (the agent closes its sockets and exits), and exit hard if that has not happened after a grace."""
    def watch() -> None:
        try:
            fd = os.pidfd_open(launcher_pid)
        except ProcessLookupError:  # already gone
            fd = None
        except (AttributeError, OSError):  # no pidfd (old kernel): poll the pid instead
            fd = -1
        if fd is not None and fd >= 0:
            select.select([fd], [], [])
        while fd == -1 and pid_alive(launcher_pid):
            time.sleep(1.0)
        logging.getLogger("p2pfl").error("the launcher (pid %s) is gone; stopping", launcher_pid)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(LAUNCHER_GONE_GRACE_SECONDS)
        run_files.remove_all()  # what the agents could not close in time must not stay in /dev/shm
        os._exit(143)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
