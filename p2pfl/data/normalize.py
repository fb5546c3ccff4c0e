"""Input normalisation, applied once after loading: the choice moves accuracy at the edge of stability.

`zscore` uses the training set's own mean and std (no test leakage); `fixed` uses given values,
e.g. mean = std = 0.5 as torchvision's Normalize((0.5,), (0.5,)) in the CCL authors' pipeline,
which maps [0, 1] pixels to [-1, 1]; `none` keeps the loader's scale ([0, 1] for images).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from p2pfl.data.dataset import ArrayDataset
from p2pfl.errors import UserError

NORMALIZATIONS = ("zscore", "fixed", "none")


def normalized(dataset: ArrayDataset, how: str = "zscore", mean: float = 0.5, std: float = 0.5) -> ArrayDataset:
    if how == "none":
        return dataset
    if how == "zscore":
        mean, std = float(dataset.x_train.mean()), float(dataset.x_train.std()) or 1.0
    elif how == "fixed":
        if std <= 0:
            raise UserError(f"data.std must be > 0, got {std}")
    else:
        raise UserError(f"unknown data.normalize {how!r}; choose one of {', '.join(NORMALIZATIONS)}")
    scale = lambda x: ((x - np.float32(mean)) / np.float32(std)).astype(np.float32)  # noqa: E731
    return dataclasses.replace(dataset, x_train=scale(dataset.x_train), x_test=scale(dataset.x_test))
