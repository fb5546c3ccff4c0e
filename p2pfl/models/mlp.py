"""A perceptron with configurable hidden widths (default 128-64): the fast default for 8x8 digits."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from p2pfl.errors import UserError
from p2pfl.models.base import FeatureClassifier


class MLP(FeatureClassifier):
    """Hidden layers of widths `hidden` (e.g. [128, 64]); phi(x) is the last one.

    The older form `hidden=128, feature_dim=64` (two layers) still builds the same network.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int | Sequence[int] = (128, 64),
                 feature_dim: int | None = None):
        super().__init__()
        widths = [hidden, feature_dim or 64] if isinstance(hidden, int) else list(hidden)
        if feature_dim is not None and not isinstance(hidden, int):
            widths.append(feature_dim)
        if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
            raise UserError(f"mlp hidden widths must be positive integers, got {hidden!r}; e.g. hidden: [128, 64]")
        self.feature_dim = widths[-1]
        layers: list[nn.Module] = [nn.Flatten()]
        for inputs, outputs in zip([math.prod(input_shape)] + widths[:-1], widths):
            layers += [nn.Linear(inputs, outputs), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
