"""The files this process made in a run's shared folder (/dev/shm/p2pfl-UID-RUNID): slot files, channel sockets.

Whoever makes one removes it when it closes (every agent closes its exchange on the way out). An agent that
cannot close in time (its launcher gone and the grace over: lifetime.watch_launcher) exits hard, and what it
made would stay in memory-backed /dev/shm for good: that exit removes what this list still holds first, each
file only if it is still the one this process made (a restarted agent of the same id may have put its own in
its place).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_made: dict[str, int] = {}  # path -> its inode when made
_lock = threading.Lock()


def made(path: str | Path) -> None:
    try:
        inode = os.lstat(path).st_ino
    except OSError:
        return
    with _lock:
        _made[str(path)] = inode


def removed(path: str | Path) -> None:
    with _lock:
        _made.pop(str(path), None)


def remove_all() -> None:
    """Unlink every file still listed, then each folder they were in if it is empty now (the run's last)."""
    with _lock:
        made_here = dict(_made)
        _made.clear()
    for path, inode in made_here.items():
        try:
            if os.lstat(path).st_ino == inode:
                os.unlink(path)
        except OSError:
            pass
    for folder in {os.path.dirname(path) for path in made_here}:
        try:
            os.rmdir(folder)
        except OSError:  # another agent's files are still there, or it is gone already
            pass
