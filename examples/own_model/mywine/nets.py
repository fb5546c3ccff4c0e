"""An own model: any torch.nn.Module works; with features(x) and head(f) CCL uses your split of it."""

from __future__ import annotations

import math

import torch
from torch import nn


class WineNet(nn.Module):
    """p2pfl passes input_shape and num_classes (because the constructor takes them) and model_args."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 32, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.Tanh(),
                                  nn.Dropout(dropout))
        self.classifier = nn.Linear(width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # phi(x): the input of the last linear layer
        return self.body(x)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.classifier(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
