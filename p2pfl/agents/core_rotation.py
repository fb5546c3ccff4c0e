"""A local run's worker processes take turns on the cores, so a core slower than the others slows them all alike.

The cores of a machine do not all run at one speed: a VM's share of its host's cores, a laptop's efficiency
cores, a core that another job or an interrupt keeps busy. On this project's 2-core VM two processes pinned one to
each core ran the same loop 14-20% apart on average over windows of 2 and 0.5 s, the faster core changing every
few seconds (`python benchmarks/core_speeds.py`). A gossip round goes at the pace of its slowest worker, whose
neighbours wait for its messages, while a run with no communication runs each worker at its own core's pace: on
the 8-agent torus that wait was the largest part of what a gossip round added (`benchmarks/round_cpu.py`'s hub
idle). With one worker per core, the launcher moves worker j to core (j + k) mod C at its k-th tick, every
ROTATE_SECONDS: over C ticks each worker has had each core for as long as the others, and a slow core costs
every worker the same instead of making the others wait. A move costs a refill of the core's own caches (L1/L2;
the shared L3 keeps the rest), ten times a second.

Only where there are exactly as many workers as cores this process may use: with fewer, the kernel can leave
a busy core to others' work, which a fixed turn would not; with more, some workers share a core anyway.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Sequence

log = logging.getLogger("p2pfl.core_rotation")

ROTATE_SECONDS = 0.1


def usable_cores() -> list[int]:
    """The cores this process may run on (its affinity: a cgroup or taskset may allow fewer than the machine has)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def core_at(worker: int, tick: int, cores: Sequence[int]) -> int:
    """Worker `worker`'s core at tick `tick`: at any tick the workers are on different cores, and over len(cores)
    ticks each has been on every core once."""
    return cores[(worker + tick) % len(cores)]


def pin(pid: int, cores: Sequence[int]) -> bool:
    """Every thread of process `pid` on `cores` (a thread made later inherits its maker's); False when the
    process is gone."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for thread in threads:
        try:
            os.sched_setaffinity(int(thread), cores)
        except OSError:  # that thread ended meanwhile
            pass
    return True


class CoreRotation:
    """Moves `pids` over `cores` (as many of each) every `period` seconds, on a thread of its own until stop()."""

    def __init__(self, pids: Sequence[int], cores: Sequence[int], period: float = ROTATE_SECONDS):
        if len(pids) != len(cores):
            raise ValueError(f"{len(pids)} processes for {len(cores)} cores: a rotation needs one per core")
        self.pids, self.cores, self.period = list(pids), list(cores), period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="core-rotation", daemon=True)

    def start(self) -> "CoreRotation":
        self._thread.start()
        return self

    def tick(self, tick: int) -> None:
        for worker, pid in enumerate(self.pids):
            pin(pid, [core_at(worker, tick, self.cores)])

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            self.tick(tick)
            tick += 1
            self._stop.wait(self.period)

    def stop(self) -> None:
        """The processes still running may use every core again."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for pid in self.pids:
            pin(pid, self.cores)


def rotation_for(pids: Sequence[int], enabled: bool = True) -> CoreRotation | None:
    """A rotation of a local run's worker processes, started, where it applies (see the module's docstring)."""
    cores = usable_cores()
    if not enabled or len(pids) < 2 or len(pids) != len(cores) or not Path("/proc/self/task").is_dir():
        return None
    log.debug("rotating %d worker processes over cores %s every %.2f s", len(pids), cores, ROTATE_SECONDS)
    return CoreRotation(pids, cores).start()
