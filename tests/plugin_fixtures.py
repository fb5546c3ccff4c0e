"""Own models and data loaders that the tests reach by import path (tests.plugin_fixtures:Name)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def plain_net(input_shape, num_classes, width: int = 16) -> nn.Module:
    """A factory of a plain Sequential: no features()/head(); p2pfl splits it at its last Linear."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), width), nn.ReLU(),
                         nn.Linear(width, num_classes))


class Softmaxed(nn.Module):
    """Its output is not its last Linear layer: p2pfl cannot split it and says so."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        return torch.softmax(self.linear(x.flatten(1)), 1)


class Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.x = torch.randn(n, 5, generator=g) + self.y[:, None].float()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def torch_datasets():
    return Pairs(120, 0), Pairs(40, 1)


def bad_labels():
    x = np.zeros((10, 4), np.float32)
    return x, np.linspace(0, 1, 10), x, np.zeros(10, int)
