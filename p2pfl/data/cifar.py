"""CIFAR-10 from its original files (binary or python version) and any torchvision dataset.

Nothing is downloaded: point data.path at files you have. The python version of CIFAR-10 is a
pickle; it is read with an unpickler that only rebuilds dicts, lists, bytes and numpy arrays, so a
tampered file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from p2pfl.data.dataset import ArrayDataset
from p2pfl.errors import UserError

RECORD = 1 + 3 * 32 * 32
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


class ArraysOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and plain containers; any other global is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise UserError(f"refusing to load {module}.{name} from a CIFAR batch file: not plain arrays")


def _folder(path: str | Path | None) -> Path:
    if not path:
        raise UserError("data 'cifar10' needs data.path: the folder with data_batch_1..5 and test_batch "
                        "(binary *.bin or python version)")
    root = Path(path)
    for candidate in (root, root / "cifar-10-batches-bin", root / "cifar-10-batches-py"):
        if (candidate / "test_batch.bin").is_file() or (candidate / "test_batch").is_file():
            return candidate
    raise UserError(f"no CIFAR-10 batches under {root}; expected data_batch_1..5 and test_batch (.bin or python)")


def _read_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % RECORD:
        raise UserError(f"{path} is not a CIFAR-10 binary batch (size {raw.size} is not a multiple of {RECORD})")
    records = raw.reshape(-1, RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def _read_python(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as handle:
        batch = ArraysOnlyUnpickler(io.BytesIO(handle.read()), encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise UserError(f"{path} is not a CIFAR-10 python batch (no data/labels)")
    return np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(batch[b"labels"], np.int64)


def _read(folder: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    binary = folder / f"{stem}.bin"
    if binary.is_file():
        return _read_binary(binary)
    if (folder / stem).is_file():
        return _read_python(folder / stem)
    raise UserError(f"missing {stem} in {folder}")


def load_cifar10(path: str | Path | None) -> ArrayDataset:
    folder = _folder(path)
    parts = [_read(folder, stem) for stem in TRAIN_BATCHES if (folder / stem).exists() or
             (folder / f"{stem}.bin").exists()]
    if not parts:
        raise UserError(f"no training batches (data_batch_N) in {folder}")
    x_test, y_test = _read(folder, "test_batch")
    x_train = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    y_train = np.concatenate([p[1] for p in parts])
    x_test = x_test.astype(np.float32) / 255.0
    return ArrayDataset("cifar10", x_train, y_train, x_test, y_test, 10)


def load_torchvision(name: str, path: str | Path | None) -> ArrayDataset:
    """Any torchvision dataset exposing `.data` and `.targets` (MNIST, FashionMNIST, CIFAR10, ...)."""
    try:
        import torchvision.datasets as tv_datasets
    except ImportError:
        raise UserError("data 'torchvision' needs torchvision installed; or use fashion-mnist / cifar10 / npz, "
                        "which read the original files directly") from None
    if not path:
        raise UserError("data 'torchvision' needs data.path: the root the torchvision dataset was saved under")
    factory = getattr(tv_datasets, name, None)
    if factory is None:
        raise UserError(f"torchvision has no dataset {name!r}; set data.torchvision_name (e.g. CIFAR10)")
    try:
        train, test = factory(str(path), train=True, download=False), factory(str(path), train=False, download=False)
    except RuntimeError as exc:  # torchvision says "Dataset not found" this way
        raise UserError(f"torchvision {name} not found under {path}: {exc}") from None

    def arrays(split) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(split.data, dtype=np.float32) / 255.0
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # N x H x W (x C) -> N x C x H x W
        return np.ascontiguousarray(x), np.asarray(split.targets, dtype=np.int64)

    (x_train, y_train), (x_test, y_test) = arrays(train), arrays(test)
    classes = int(max(y_train.max(), y_test.max())) + 1
    return ArrayDataset(name.lower(), x_train, y_train, x_test, y_test, classes)
