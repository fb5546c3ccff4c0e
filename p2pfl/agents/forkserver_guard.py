"""Imported first in the forkserver (a preload), and only there: it dies with the launcher.

Agents watch the launcher's pid themselves, but the idle forkserver would otherwise outlive a
SIGKILLed launcher (nothing closes its pipe). With the parent-death signal armed here, the kernel
stops it when the launcher goes; its agents then get their own parent-death signal too.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_launcher() -> None:
    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the agents' own launcher watch still stops the run
        return
    if os.getppid() != parent:  # the launcher died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


die_with_launcher()
