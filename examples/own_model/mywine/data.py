"""An own data set: a function returning (x_train, y_train, x_test, y_test) numpy arrays."""

from __future__ import annotations

import numpy as np


def load(path: str | None = None):
    """The 178 wines bundled with scikit-learn (13 features, 3 cultivars), standardised; `path` is data.path."""
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split

    x, y = load_wine(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    return ((x_train - mean) / std).astype(np.float32), y_train, ((x_test - mean) / std).astype(np.float32), y_test
