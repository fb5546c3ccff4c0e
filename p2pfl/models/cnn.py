"""A small CNN for 8x8 (or any small) images, no normalisation layers."""

from __future__ import annotations

import torch
from torch import nn

from p2pfl.models.base import FeatureClassifier
from p2pfl.models.pooling import MaxPool2x2


class SmallCNN(FeatureClassifier):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, feature_dim: int = 64):
        super().__init__()
        channels, height, width = input_shape
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), MaxPool2x2(), nn.Flatten(),
            nn.Linear(32 * (height // 2) * (width // 2), feature_dim), nn.ReLU())
        self.classifier = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
