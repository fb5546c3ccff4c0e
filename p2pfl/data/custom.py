"""A data set from a function given by import path (`package.module:load`).

The function is called with `path=data.path` when it takes a `path` argument, else with nothing,
and returns one of: (x_train, y_train, x_test, y_test) arrays (or a dict with those keys), an
ArrayDataset, or a (train, test) pair of torch Datasets whose items are (x, y). Images are
N x C x H x W (N x H x W gets a channel), labels integers 0..K-1. The arrays are used as given
(no standardisation): scale the features in the function.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from p2pfl.data.dataset import ArrayDataset
from p2pfl.errors import UserError
from p2pfl.plugins import accepted, load_object

KEYS = ("x_train", "y_train", "x_test", "y_test")


def to_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def from_torch_dataset(dataset: Any, spec: str, part: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        items = [dataset[i] for i in range(len(dataset))]
        xs = np.stack([to_array(x) for x, _ in items])
        ys = np.array([int(to_array(y)) for _, y in items])
    except Exception as exc:  # the user's __getitem__
        raise UserError(f"data {spec}: reading the {part} Dataset failed ({type(exc).__name__}: {exc}); its items "
                        "must be (x, y) with a tensor x and an integer label y") from None
    return xs, ys


def arrays_of(result: Any, spec: str) -> tuple[np.ndarray, ...]:
    if isinstance(result, ArrayDataset):
        return result.x_train, result.y_train, result.x_test, result.y_test
    if isinstance(result, dict):
        missing = [k for k in KEYS if k not in result]
        if missing:
            raise UserError(f"data {spec} returned a dict without {', '.join(missing)}; return {', '.join(KEYS)}")
        return tuple(to_array(result[k]) for k in KEYS)
    if isinstance(result, (tuple, list)) and len(result) == 2 and all(hasattr(d, "__getitem__") and
                                                                      hasattr(d, "__len__") for d in result):
        return (*from_torch_dataset(result[0], spec, "train"), *from_torch_dataset(result[1], spec, "test"))
    if isinstance(result, (tuple, list)) and len(result) == 4:
        return tuple(to_array(a) for a in result)
    raise UserError(f"data {spec} returned a {type(result).__name__}; return (x_train, y_train, x_test, y_test) "
                    "arrays or a (train, test) pair of torch Datasets")


def load_custom(spec: str, path: str | None) -> ArrayDataset:
    function = load_object(spec, "data.name")
    if not callable(function):
        raise UserError(f"data.name {spec} is a {type(function).__name__}, not a function")
    try:
        result = function(path=path) if accepted(function, "path") else function()
    except UserError:
        raise
    except Exception as exc:  # the user's loader
        raise UserError(f"data {spec} failed: {type(exc).__name__}: {exc}") from None
    x_train, y_train, x_test, y_test = arrays_of(result, spec)
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise UserError(f"data {spec}: {len(x_train)} training inputs but {len(y_train)} labels, {len(x_test)} test "
                        f"inputs but {len(y_test)} labels; they must match")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserError(f"data {spec}: training inputs have shape {x_train.shape[1:]}, test inputs {x_test.shape[1:]}")
    for name, labels in (("y_train", y_train), ("y_test", y_test)):
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (len(labels) and labels.min() < 0):
            raise UserError(f"data {spec}: {name} must be a 1-D array of integer labels 0..K-1, got dtype "
                            f"{labels.dtype} and shape {labels.shape}")
    if len(y_train) == 0 or len(y_test) == 0:
        raise UserError(f"data {spec} returned an empty training or test set")
    x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
    if x_train.ndim == 3:
        x_train, x_test = x_train[:, None], x_test[:, None]
    classes = int(max(y_train.max(), y_test.max())) + 1
    name = spec.split(":")[-1]
    return ArrayDataset(name, np.ascontiguousarray(x_train), y_train.astype(np.int64), np.ascontiguousarray(x_test),
                        y_test.astype(np.int64), classes)
