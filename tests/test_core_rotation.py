"""Worker processes taking turns on the cores (p2pfl/agents/core_rotation.py) and the launcher's use of it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pfl.agents import core_rotation, launcher
from p2pfl.agents.core_rotation import CoreRotation, core_at, pin, rotation_for, usable_cores
from p2pfl.config import load_config
from tests.conftest import parent_of, small_config
from tests.test_processes import write_config

CORES = usable_cores()
needs_two_cores = pytest.mark.skipif(len(CORES) < 2, reason="needs two usable cores")
THREADED_CHILD = "import threading, time; threading.Thread(target=time.sleep, args=(120,)).start(); time.sleep(120)"


@pytest.mark.parametrize("count", [2, 3, 5])
def test_workers_are_on_different_cores_at_every_tick_and_on_each_core_once_per_turn(count):
    cores = [10 * c for c in range(count)]  # any core numbers, in order
    for tick in range(3 * count):
        assert sorted(core_at(w, tick, cores) for w in range(count)) == cores
    for worker in range(count):
        for start in range(count):
            assert sorted(core_at(worker, tick, cores) for tick in range(start, start + count)) == cores


def threads_affinity(pid: int) -> list[set[int]]:
    return [os.sched_getaffinity(int(t)) for t in os.listdir(f"/proc/{pid}/task")]


@pytest.fixture
def two_threaded_children():
    """Two child interpreters of two threads each, killed at the end whatever happens."""
    children = [subprocess.Popen([sys.executable, "-c", THREADED_CHILD]) for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        while any(len(os.listdir(f"/proc/{c.pid}/task")) < 2 for c in children):
            assert time.monotonic() < deadline, "the children did not start their thread"
            time.sleep(0.05)
        yield [c.pid for c in children]
    finally:
        for child in children:
            child.kill()
            child.wait()


@needs_two_cores
def test_a_tick_pins_every_thread_of_each_process_and_the_next_tick_swaps_them(two_threaded_children):
    pids, cores = two_threaded_children, CORES[:2]
    rotation = CoreRotation(pids, cores)
    rotation.tick(0)
    assert threads_affinity(pids[0]) == [{cores[0]}] * 2 and threads_affinity(pids[1]) == [{cores[1]}] * 2
    rotation.tick(1)
    assert threads_affinity(pids[0]) == [{cores[1]}] * 2 and threads_affinity(pids[1]) == [{cores[0]}] * 2
    rotation.stop()  # never started: only frees them
    assert all(affinity == set(cores) for pid in pids for affinity in threads_affinity(pid))


@needs_two_cores
def test_a_started_rotation_moves_the_processes_and_frees_them_when_stopped(two_threaded_children, monkeypatch):
    pids = two_threaded_children
    monkeypatch.setattr(core_rotation, "usable_cores", lambda: CORES[:2])
    rotation = rotation_for(pids)
    assert rotation is not None
    try:
        seen = set()
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:  # its own thread, every ROTATE_SECONDS
            first = os.sched_getaffinity(pids[0])
            if len(first) == 1:
                seen.add(min(first))
            time.sleep(0.01)
        assert seen == set(CORES[:2])
    finally:
        rotation.stop()
    assert all(affinity == set(CORES[:2]) for pid in pids for affinity in threads_affinity(pid))


def test_no_rotation_unless_there_is_one_process_per_core(monkeypatch):
    monkeypatch.setattr(core_rotation, "usable_cores", lambda: [0, 1])
    assert rotation_for([os.getpid()]) is None  # one process: nobody waits for it
    assert rotation_for([1, 2, 3]) is None  # more processes than cores: some share one anyway
    assert rotation_for([1, 2], enabled=False) is None  # network.rotate_cores: false
    monkeypatch.setattr(core_rotation, "usable_cores", lambda: [0, 1, 2, 3])
    assert rotation_for([1, 2]) is None  # fewer: the kernel may keep them off cores that others keep busy
    with pytest.raises(ValueError, match="one per core"):
        CoreRotation([1, 2], [0, 1, 2])


def test_pinning_a_process_that_is_gone_says_so():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert pin(child.pid, CORES) is False


def test_a_local_run_rotates_its_worker_processes_and_stops_the_rotation_at_the_end(tmp_path, monkeypatch,
                                                                                   no_leaked_agents):
    """The launcher hands the rotation its workers' pids and network.rotate_cores, and stops it before the end."""
    calls = []

    class Recorder:
        def stop(self):
            calls.append(("stop",))

    def recorded(pids, enabled=True):
        parents = [parent_of(pid) for pid in pids]  # the forkserver's children: the workers it forked
        calls.append(("start", list(pids), enabled, [b"forkserver" in Path(f"/proc/{p}/cmdline").read_bytes()
                                                     for p in parents]))
        return Recorder()

    monkeypatch.setattr(launcher, "rotation_for", recorded)
    config = small_config(agents=4, rounds=3, network__agents_per_process=2)
    path = write_config(tmp_path, config)
    launcher.launch_local(load_config(path), path, tmp_path / "run", show_progress=False)
    assert calls[0][2] is True and len(set(calls[0][1])) == 2 and calls[0][3] == [True, True]
    assert calls[1:] == [("stop",)]
    config.network.rotate_cores = False
    path = write_config(tmp_path, config)
    calls.clear()
    launcher.launch_local(load_config(path), path, tmp_path / "run2", show_progress=False)
    assert calls[0][2] is False
