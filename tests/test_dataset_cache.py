"""The dataset cache: prepared once per source and options, memory-mapped, shards read without mapping the rest."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from p2pfl.data import agent_shard, load_dataset
from p2pfl.data.cache import CACHE_ENV, cache_key, cached, take_rows
from p2pfl.data.dataset import ArrayDataset
from tests.conftest import ROOT, child_env


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def tiny(value: float = 1.0, n: int = 12) -> ArrayDataset:
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 1, 2, 2) * value
    return ArrayDataset("tiny", x, np.arange(n) % 3, x[:4].copy(), np.arange(4) % 3, 3)


def write_npz(path, value: float) -> None:
    d = tiny(value)
    np.savez(path, x_train=d.x_train, y_train=d.y_train, x_test=d.x_test, y_test=d.y_test)


def test_an_entry_is_built_once_and_served_memory_mapped(cache_dir):
    calls = []

    def build():
        calls.append(1)
        return tiny()

    first, second = cached("k", build), cached("k", build)
    assert len(calls) == 1
    assert isinstance(second.x_train, np.memmap) and np.array_equal(second.x_train, tiny().x_train)
    assert second.num_classes == 3 and second.name == "tiny" and np.array_equal(first.y_test, tiny().y_test)
    second.x_train[0] = -1  # copy-on-write: the entry on disk is not changed by an agent
    assert np.array_equal(cached("k", build).x_train, tiny().x_train)


def test_agents_starting_together_build_once(cache_dir):
    calls = []

    def slow_build():
        calls.append(1)
        time.sleep(0.2)
        return tiny()

    threads = [threading.Thread(target=cached, args=("together", slow_build)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and (cache_dir / "together" / "meta.json").exists()


def test_a_changed_source_or_option_gets_a_new_entry(cache_dir, tmp_path):
    path = tmp_path / "d.npz"
    write_npz(path, 1.0)
    a = load_dataset("npz", str(path), normalize="none")
    time.sleep(0.01)
    write_npz(path, 2.0)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime even on a coarse clock
    b = load_dataset("npz", str(path), normalize="none")
    assert np.allclose(b.x_train, 2 * a.x_train) and b.x_train[1].sum() > 0
    c = load_dataset("npz", str(path), normalize="fixed", mean=0.0, std=2.0)
    assert np.allclose(c.x_train, a.x_train)
    assert len([p for p in cache_dir.iterdir() if not p.name.startswith(".")]) == 3
    assert cache_key(a=1) != cache_key(a=2)


def test_off_and_an_unusable_folder_build_in_memory(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, "off")
    assert not isinstance(cached("k", tiny).x_train, np.memmap)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocker))
    assert np.array_equal(cached("k", tiny).x_train, tiny().x_train)


def test_take_rows_reads_the_rows_asked_in_their_order(cache_dir):
    mapped = cached("rows", lambda: tiny(n=50)).x_train
    for indices in ([7, 3, 3, 49, 0], [], list(range(50))[::-1]):
        assert np.array_equal(take_rows(mapped, np.array(indices, dtype=np.int64)), tiny(n=50).x_train[indices])
    assert np.array_equal(take_rows(mapped[10:], np.array([0, 2])), tiny(n=50).x_train[[10, 12]])  # a view
    with pytest.raises(IndexError):
        take_rows(mapped, np.array([50]))


RSS_PROBE = """
import os, sys, numpy as np
from p2pfl.data import agent_shard
from p2pfl.data.cache import cached
from p2pfl.data.dataset import ArrayDataset
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) // 1024
n = 16384
build = lambda: ArrayDataset('big', np.ones((n, 1, 32, 32), np.float32), np.arange(n) % 10,
                             np.ones((4, 1, 32, 32), np.float32), np.arange(4), 10)
cached('big', build)
data = cached('big', build)
before = rss()
shard = agent_shard(data, 3, 16, 'iid', 0.1, 0)
print(rss() - before, len(shard))
"""


def test_a_shard_costs_its_rows_not_the_whole_training_set(cache_dir):
    """64 MiB of training rows, 1/16 of them in the shard (4 MiB): mapped and indexed, the kernel's
    fault-around made the whole file resident in every agent."""
    out = subprocess.run([sys.executable, "-c", RSS_PROBE], capture_output=True, text=True, check=True, cwd=ROOT,
                         env=child_env()).stdout.split()
    grown, rows = int(out[0]), int(out[1])
    assert rows == 1024 and grown < 24, f"RSS grew {grown} MiB for a 4 MiB shard"


def test_shards_from_the_cache_equal_shards_from_memory(cache_dir):
    data = load_dataset("digits")
    assert isinstance(data.x_train, np.memmap)
    os.environ[CACHE_ENV] = "off"
    try:
        plain = load_dataset("digits")
    finally:
        os.environ[CACHE_ENV] = str(cache_dir)
    for agent in (0, 5):
        a, b = agent_shard(data, agent, 8, "dirichlet", 0.1, 3), agent_shard(plain, agent, 8, "dirichlet", 0.1, 3)
        assert a.x.equal(b.x) and a.y.equal(b.y) and a.x_test.equal(b.x_test)
