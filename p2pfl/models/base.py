"""Classifiers split into `features` and `head`: CCL needs phi(x), the input of the last linear layer."""

from __future__ import annotations

import torch
from torch import nn


class FeatureClassifier(nn.Module):
    """forward(x) = head(features(x)); `feature_dim` is d, the width of phi(x)."""

    feature_dim: int
    unsupervised = False  # True: forward(x) reconstructs x and the loss is MSE (no labels used)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.classifier(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
