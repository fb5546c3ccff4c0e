import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from p2pfl.data import BatchStream, agent_shard, load_dataset
from p2pfl.data.dataset import ArrayDataset
from p2pfl.data.sources import FASHION_MNIST_DIR, read_idx
from p2pfl.errors import UserError


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    code = {np.uint8: 0x08, np.int32: 0x0C}[array.dtype.type]
    raw = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    raw += array.astype(array.dtype.newbyteorder(">")).tobytes()
    with (gzip.open if compress else open)(path, "wb") as handle:  # closed here: 3.12 buffers gzip writes
        handle.write(raw)


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


def test_the_agents_of_one_process_draw_the_split_once(monkeypatch):
    import p2pfl.data as data_module
    from p2pfl.data.partition import partition

    data = load_dataset("digits")
    drawn = []
    monkeypatch.setattr(data_module, "_last_split", None)
    monkeypatch.setattr(data_module, "partition", lambda *args: drawn.append(args[1:]) or partition(*args))
    split = partition(data.y_train, 8, "dirichlet", 0.1, 0)
    for agent in range(8):
        assert np.array_equal(agent_shard(data, agent, 8, "dirichlet", 0.1, seed=0).y.numpy(),
                              data.y_train[split[agent]])
    assert drawn == [(8, "dirichlet", 0.1, 0)]
    agent_shard(data, 0, 8, "dirichlet", 0.1, seed=1)  # other settings: drawn again
    labels = data.y_train.copy()  # other labels (an equal copy): drawn again
    agent_shard(ArrayDataset("copy", data.x_train, labels, data.x_test, data.y_test, data.num_classes),
                0, 8, "dirichlet", 0.1, seed=1)
    assert drawn == [(8, "dirichlet", 0.1, 0), (8, "dirichlet", 0.1, 1), (8, "dirichlet", 0.1, 1)]


def write_cifar_folder(folder: Path, binary: bool, per_batch: int = 6) -> None:
    import pickle

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for stem in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 255, (per_batch, 3072), dtype=np.uint8)
        labels = (np.arange(per_batch) % 10).astype(np.uint8)
        if binary:
            np.concatenate([labels[:, None], images], axis=1).tofile(folder / f"{stem}.bin")
        else:
            (folder / stem).write_bytes(pickle.dumps({b"data": images, b"labels": labels.tolist()}))


@pytest.mark.parametrize("binary", [True, False])
def test_cifar10_loader_reads_both_original_formats(tmp_path, binary):
    write_cifar_folder(tmp_path / ("cifar-10-batches-bin" if binary else "cifar-10-batches-py"), binary)
    data = load_dataset("cifar10", str(tmp_path))
    assert data.x_train.shape == (30, 3, 32, 32) and data.x_test.shape == (6, 3, 32, 32)
    assert data.y_train[:6].tolist() == [0, 1, 2, 3, 4, 5]


def test_cifar10_python_batch_cannot_run_code(tmp_path):
    import pickle

    write_cifar_folder(tmp_path, binary=False)

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}))
    with pytest.raises(UserError, match="refusing to load builtins.print"):
        load_dataset("cifar10", str(tmp_path))


def test_torchvision_adapter_on_a_dataset_class_with_data_and_targets(tmp_path, monkeypatch):
    """torchvision does not install beside this torch; the adapter is checked against its interface."""
    import sys
    import types

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            assert root == str(tmp_path) and download is False
            n = 8 if train else 4
            self.data = np.full((n, 32, 32, 3), 128, dtype=np.uint8)
            self.data[:, :, :, 0] = 0
            self.targets = list(range(n))

    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(CIFAR10=FakeCIFAR10)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake.datasets)
    data = load_dataset("torchvision", str(tmp_path), "CIFAR10")
    assert data.x_train.shape == (8, 3, 32, 32) and data.num_classes == 8
    assert data.x_train[0, 0].max() < data.x_train[0, 1].min()  # channel 0 stayed the dark one: HWC -> CHW
    with pytest.raises(UserError, match="no dataset 'SVHN'"):
        load_dataset("torchvision", str(tmp_path), "SVHN")


def test_real_torchvision_if_installed(tmp_path):
    pytest.importorskip("torchvision", reason="torchvision is not installable beside torch 2.13 here")
    with pytest.raises(UserError, match="not found"):
        load_dataset("torchvision", str(tmp_path), "CIFAR10")


def test_feature_normalisation_gives_each_training_feature_mean_0_std_1_and_reuses_them_on_test():
    from p2pfl.data.normalize import normalized

    rng = np.random.default_rng(0)
    scales = np.array([0.1, 10.0, 1000.0, 0.0], dtype=np.float32)  # the last feature is constant
    x_train = (rng.normal(size=(500, 4)) * scales + 5).astype(np.float32)
    x_test = (rng.normal(size=(50, 4)) * scales + 5).astype(np.float32)
    data = normalized(ArrayDataset("t", x_train, np.zeros(500, np.int64), x_test, np.zeros(50, np.int64), 2), "feature")
    assert np.allclose(data.x_train.mean(0), 0, atol=1e-4)
    assert np.allclose(data.x_train.std(0)[:3], 1, atol=1e-4) and np.all(data.x_train[:, 3] == 0)
    expected = (x_test[:, 1] - x_train[:, 1].mean()) / x_train[:, 1].std()
    assert np.allclose(data.x_test[:, 1], expected, atol=1e-4) and data.x_test.dtype == np.float32
    glob = normalized(ArrayDataset("t", x_train, np.zeros(500, np.int64), x_test, np.zeros(50, np.int64), 2), "zscore")
    assert glob.x_train[:, 0].std() < 0.01  # one global scale leaves the small features near constant
