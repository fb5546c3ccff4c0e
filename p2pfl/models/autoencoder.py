"""A small fully connected autoencoder: CLoVE's unsupervised variant clusters clients by its
reconstruction error (ALGORITHMS.md B2.7)."""

from __future__ import annotations

import math

import torch
from torch import nn

from p2pfl.models.base import FeatureClassifier


class AutoEncoder(FeatureClassifier):
    unsupervised = True

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int = 64, code: int = 16):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.feature_dim = code
        size = math.prod(input_shape)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, code), nn.ReLU())
        self.classifier = nn.Sequential(nn.Linear(code, hidden), nn.ReLU(), nn.Linear(hidden, size))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        """The reconstruction, in the input's shape."""
        return self.classifier(f).reshape(-1, *self.input_shape)
