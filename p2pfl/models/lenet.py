"""LeNet-5 for 28x28 grey images (the CCL paper's Fashion-MNIST model); phi(x) is the 84-wide layer."""

from __future__ import annotations

import torch
from torch import nn

from p2pfl.models.base import FeatureClassifier
from p2pfl.models.pooling import MaxPool2x2


class LeNet5(FeatureClassifier):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        channels, height, width = input_shape
        self.feature_dim = 84
        flat = 16 * ((height // 2 - 4) // 2) * ((width // 2 - 4) // 2)
        self.body = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=2), nn.ReLU(), MaxPool2x2(),
            nn.Conv2d(6, 16, 5), nn.ReLU(), MaxPool2x2(), nn.Flatten(),
            nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
        self.classifier = nn.Linear(84, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
