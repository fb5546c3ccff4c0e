"""Offline data sources: scikit-learn digits (embedded), Fashion-MNIST IDX files, generic .npz.

Loaders return the raw scale (images in [0, 1]); data.normalize applies one normalisation after.
"""

from __future__ import annotations

import gzip
import zipfile
import zlib
from pathlib import Path

import numpy as np

from p2pfl.data.dataset import ArrayDataset
from p2pfl.errors import UserError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def load_digits(test_fraction: float = 0.2, split_seed: int = 0) -> ArrayDataset:
    """The 1797 8x8 digits bundled in scikit-learn: real, offline, the default."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :]
    x_train, x_test, y_train, y_test = train_test_split(
        x, bunch.target.astype(np.int64), test_size=test_fraction, random_state=split_seed, stratify=bunch.target)
    return ArrayDataset("digits", x_train, y_train, x_test, y_test, 10)


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file (optionally gzipped), the format of the original MNIST-family files."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (bad magic number); point data.path at the original files")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise UserError(f"{path} is truncated: header promises {expected} bytes, file has {len(raw) - offset}")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(tuple(int(d) for d in dims))


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise UserError(f"missing {stem}(.gz) in {directory}; install it with `apt-get install dataset-fashion-mnist` "
                    "(or `make fmnist`) or set data.path to the folder holding the IDX files")


def load_idx_folder(path: str | Path, name: str) -> ArrayDataset:
    """An MNIST-style folder: train/t10k images and labels in IDX format."""
    directory = Path(path)
    if not directory.is_dir():
        raise UserError(f"data path {directory} does not exist; install it with `make fmnist` "
                        "or set data.path to the folder holding the IDX files")
    arrays = {stem: read_idx(_find(directory, stem)) for stem in
              ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    x_train = arrays["train-images-idx3-ubyte"].astype(np.float32)[:, None] / 255.0
    x_test = arrays["t10k-images-idx3-ubyte"].astype(np.float32)[:, None] / 255.0
    return ArrayDataset(name, x_train, arrays["train-labels-idx1-ubyte"].astype(np.int64),
                        x_test, arrays["t10k-labels-idx1-ubyte"].astype(np.int64), 10)


def load_fashion_mnist(path: str | Path | None = None) -> ArrayDataset:
    return load_idx_folder(path or FASHION_MNIST_DIR, "fashion-mnist")


def load_npz(path: str | Path | None) -> ArrayDataset:
    """A .npz holding x_train, y_train, x_test, y_test (images N x C x H x W, N x H x W or N x D)."""
    if not path:
        raise UserError("data 'npz' needs a file: set data.path to a .npz with x_train, y_train, x_test, y_test")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist; set data.path to an existing .npz")
    save_hint = "save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
    try:
        archive = np.load(path, allow_pickle=False)  # never unpickle a data file
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path} is not a .npz archive ({type(exc).__name__}); {save_hint}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UserError(f"{path} holds a single array, not a .npz archive; {save_hint}")
    with archive as npz:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(npz.files)
        if missing:
            raise UserError(f"{path} lacks {', '.join(sorted(missing))}; {save_hint}")
        arrays = {}
        for key in ("x_train", "y_train", "x_test", "y_test"):
            try:
                arrays[key] = npz[key]
            except ValueError:  # numpy refuses object arrays without pickle
                raise UserError(f"{path}: {key} is an object array (it would need pickle); store numbers, e.g. "
                                f"np.asarray({key}, dtype=np.float32)") from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise UserError(f"{path}: {key} cannot be read ({type(exc).__name__}); the file is damaged") from None
    check_arrays(path, **arrays)
    x_train, x_test = arrays["x_train"].astype(np.float32), arrays["x_test"].astype(np.float32)
    y_train, y_test = arrays["y_train"].astype(np.int64), arrays["y_test"].astype(np.int64)
    if x_train.ndim == 3:
        x_train, x_test = x_train[:, None], x_test[:, None]
    classes = int(max(y_train.max(), y_test.max())) + 1
    return ArrayDataset(path.stem, x_train, y_train, x_test, y_test, classes)


def check_arrays(path: Path, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> None:
    """Everything that would otherwise train silently on garbage or fail later inside an agent: one line each."""
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.dtype.kind not in "biuf":
            raise UserError(f"{path}: x_{split} has dtype {x.dtype}; features must be numbers")
        if x.ndim < 2 or len(x) == 0:
            raise UserError(f"{path}: x_{split} has shape {x.shape}; it needs at least one sample (N x D or "
                            "N x [C x] H x W)")
        if y.ndim != 1:
            raise UserError(f"{path}: y_{split} has shape {y.shape}; labels are one integer per sample")
        if len(y) != len(x):
            raise UserError(f"{path}: {len(x)} samples in x_{split} but {len(y)} labels in y_{split}; "
                            "give one label per sample")
        integral = y.dtype.kind in "biu" or (y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all())
        if not integral:
            raise UserError(f"{path}: y_{split} has dtype {y.dtype} with non-integer values; labels are class "
                            "numbers 0..C-1")
        if (y < 0).any():
            raise UserError(f"{path}: y_{split} holds negative labels (min {y.min()}); labels are class numbers "
                            "0..C-1")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise UserError(f"{path}: x_{split} holds NaN or infinite values; clean the features first")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserError(f"{path}: a train sample has shape {x_train.shape[1:]} but a test sample "
                        f"{x_test.shape[1:]}; both sets need the same features")
