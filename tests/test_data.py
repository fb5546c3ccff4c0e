import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from p2pfl.data import BatchStream, agent_shard, load_dataset
from p2pfl.data.sources import FASHION_MNIST_DIR, read_idx
from p2pfl.errors import UserError


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    code = {np.uint8: 0x08, np.int32: 0x0C}[array.dtype.type]
    raw = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    raw += array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


def make_mnist_folder(folder: Path, compress: bool, n_train: int = 40, n_test: int = 10) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        suffix = ".gz" if compress else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 255, (n, 28, 28), dtype=np.uint8),
                  compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", (np.arange(n) % 10).astype(np.uint8), compress)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_folder_loader_reads_files_it_did_not_write(tmp_path, compress):
    make_mnist_folder(tmp_path, compress)
    data = load_dataset("fashion-mnist", str(tmp_path))
    assert data.x_train.shape == (40, 1, 28, 28) and data.x_test.shape == (10, 1, 28, 28)
    assert data.y_train.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert abs(float(data.x_train.mean())) < 1e-5  # standardized with training statistics


def test_idx_reader_rejects_bad_magic_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(UserError, match="magic"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok", np.zeros((3, 2), np.uint8), False)
    (tmp_path / "cut").write_bytes((tmp_path / "ok").read_bytes()[:-1])
    with pytest.raises(UserError, match="truncated"):
        read_idx(tmp_path / "cut")


def test_missing_data_path_says_how_to_fix(tmp_path):
    with pytest.raises(UserError, match="make fmnist"):
        load_dataset("fashion-mnist", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="set data.path"):
        load_dataset("npz", None)


def test_npz_loader(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.normal(size=(30, 8, 8)), y_train=np.arange(30) % 3,
             x_test=rng.normal(size=(6, 8, 8)), y_test=np.arange(6) % 3)
    data = load_dataset("npz", str(tmp_path / "d.npz"))
    assert data.input_shape == (1, 8, 8) and data.num_classes == 3
    np.savez(tmp_path / "bad.npz", x_train=np.zeros(3))
    with pytest.raises(UserError, match="lacks"):
        load_dataset("npz", str(tmp_path / "bad.npz"))


def test_digits_is_the_offline_default():
    data = load_dataset("digits")
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert len(data.y_train) + len(data.y_test) == 1797


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="dataset-fashion-mnist not installed (make fmnist)")
def test_real_fashion_mnist_files():
    data = load_dataset("fashion-mnist")
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(data.y_train).tolist() == [6000] * 10


def test_each_agent_keeps_only_its_shard_and_batches_cycle_through_it():
    data = load_dataset("digits")
    shard = agent_shard(data, 2, 8, "dirichlet", 0.1, seed=0)
    assert len(shard) == len(data.y_train) // 8
    stream = BatchStream(shard, 32, seed=1)
    seen = torch.cat([stream.next()[1] for _ in range(len(shard) // 32)])
    assert stream.epoch == 1 and len(seen) == (len(shard) // 32) * 32
    again = BatchStream(shard, 32, seed=1)
    assert torch.equal(again.next()[0], BatchStream(shard, 32, seed=1).next()[0])
