"""A two-hidden-layer perceptron: the fast default for 8x8 digits."""

from __future__ import annotations

import math

import torch
from torch import nn

from p2pfl.models.base import FeatureClassifier


class MLP(FeatureClassifier):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int = 128, feature_dim: int = 64):
        super().__init__()
        self.feature_dim = feature_dim
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(),
                                  nn.Linear(hidden, feature_dim), nn.ReLU())
        self.classifier = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
