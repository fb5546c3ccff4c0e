"""A prepared dataset on disk, memory-mapped by every agent of a run.

Without it each agent re-read, decoded and normalised the whole data set (Fashion-MNIST: 3 s and a
~900 MB peak per agent, all of it held for a shard of a few MB). Prepared once, the arrays are .npy
files that each agent maps copy-on-write: pages come from the one page cache shared by every agent,
an agent touches only its shard's rows and the test set, and nothing is decoded twice.

The key covers everything the arrays depend on (loader, source files' size and mtime, normalisation,
format version), so a changed source or option prepares a new entry instead of serving a stale one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from p2pfl.data.dataset import ArrayDataset

CACHE_ENV = "P2PFL_CACHE_DIR"
FORMAT_VERSION = 1
ARRAYS = ("x_train", "y_train", "x_test", "y_test")
log = logging.getLogger("p2pfl.data")


def cache_root() -> Path:
    """$P2PFL_CACHE_DIR (`off`: no cache), else $XDG_CACHE_HOME/p2pfl, else ~/.cache/p2pfl."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "p2pfl"


def source_stamp(path: str | None) -> list:
    """Size and mtime of a source file, or of every file in a source folder: a changed source changes the key."""
    if not path:
        return []
    source = Path(path)
    if source.is_file():
        files = [source]
    elif source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file())
    else:
        return [str(source), "missing"]  # the loader reports it; nothing is cached for a source that is not there
    return [str(source.resolve())] + [[str(p.relative_to(source)), p.stat().st_size, p.stat().st_mtime_ns]
                                      for p in files]


def cache_key(**parts: object) -> str:
    text = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def load_entry(directory: Path) -> ArrayDataset:
    meta = json.loads((directory / "meta.json").read_text())
    # mmap_mode "c": copy-on-write, so torch.from_numpy gets a writable view while pages stay shared
    arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="c") for name in ARRAYS}
    return ArrayDataset(meta["name"], num_classes=meta["num_classes"], **arrays)


def write_entry(dataset: ArrayDataset, directory: Path) -> None:
    """Written beside the final folder and renamed into place: a reader sees a whole entry or none."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        for name in ARRAYS:
            np.save(staging / f"{name}.npy", np.ascontiguousarray(getattr(dataset, name)))
        (staging / "meta.json").write_text(json.dumps({"name": dataset.name, "num_classes": dataset.num_classes}))
        os.rename(staging, directory)
    except OSError:
        if not (directory / "meta.json").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def cached(key: str, build: Callable[[], ArrayDataset]) -> ArrayDataset:
    """The entry for `key`, built once: agents starting together wait for the first instead of all building."""
    if os.environ.get(CACHE_ENV) == "off":
        return build()
    directory = cache_root() / key
    try:
        if not (directory / "meta.json").exists():
            directory.parent.mkdir(parents=True, exist_ok=True)
            with open(directory.parent / f".{key}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not (directory / "meta.json").exists():
                    write_entry(build(), directory)
        return load_entry(directory)
    except OSError as exc:  # a read-only or full cache folder costs memory and time, never the run
        log.warning("dataset cache %s not usable (%s); each agent prepares the data itself", directory, exc)
        return build()


def take_rows(array: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """array[indices] as a private copy. From a cache entry the rows are read with pread: touched through
    the map, every row would also map its neighbours' pages (the kernel faults around each access), which
    counted the whole training set, not the shard, in every agent's resident memory."""
    indices = np.asarray(indices, dtype=np.int64)
    if not whole_file_map(array):
        return np.ascontiguousarray(array[indices])
    out = np.empty((len(indices), *array.shape[1:]), dtype=array.dtype)
    if not len(out):
        return out
    row_bytes = out[0].nbytes
    rows = out.reshape(len(out), -1).view(np.uint8)
    with open(array.filename, "rb") as handle:
        for i, index in enumerate(indices.tolist()):
            if not 0 <= index < len(array):
                raise IndexError(f"row {index} is out of range for {len(array)} rows")
            if os.preadv(handle.fileno(), [rows[i]], array.offset + index * row_bytes) != row_bytes:
                raise OSError(f"{array.filename} is shorter than its header says")
    return out


def whole_file_map(array: np.ndarray) -> bool:
    """A memmap over a whole .npy file (what load_entry returns), not a slice of one."""
    filename = getattr(array, "filename", None)
    if not isinstance(array, np.memmap) or not filename or not array.flags.c_contiguous:
        return False
    return array.offset + array.nbytes == os.path.getsize(filename)
