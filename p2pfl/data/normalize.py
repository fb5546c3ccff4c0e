"""Input normalisation, applied once after loading: the choice moves accuracy at the edge of stability.

`zscore` uses the training set's own mean and std (no test leakage); `feature` does so per input
feature (per pixel for images), what tabular data needs; `fixed` uses given values,
e.g. mean = std = 0.5 as torchvision's Normalize((0.5,), (0.5,)) in the CCL authors' pipeline,
which maps [0, 1] pixels to [-1, 1]; `none` keeps the loader's scale ([0, 1] for images).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from p2pfl.data.dataset import ArrayDataset
from p2pfl.errors import UserError

NORMALIZATIONS = ("zscore", "feature", "fixed", "none")


def normalized(dataset: ArrayDataset, how: str = "zscore", mean: float = 0.5, std: float = 0.5) -> ArrayDataset:
    if how == "none":
        return dataset
    if how == "zscore":
        mean, std = float(dataset.x_train.mean()), float(dataset.x_train.std()) or 1.0
    elif how == "feature":  # tabular data: features on their own scales (wine: 0.1 to 1,000) each get their own
        mean = dataset.x_train.mean(axis=0, dtype=np.float64).astype(np.float32)
        std = dataset.x_train.std(axis=0, dtype=np.float64).astype(np.float32)
        std[std == 0] = 1.0  # a constant feature stays centred at 0
    elif how == "fixed":
        if std <= 0:
            raise UserError(f"data.std must be > 0, got {std}")
    else:
        raise UserError(f"unknown data.normalize {how!r}; choose one of {', '.join(NORMALIZATIONS)}")
    scale = lambda x: ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)  # noqa: E731
    return dataclasses.replace(dataset, x_train=scale(dataset.x_train), x_test=scale(dataset.x_test))
