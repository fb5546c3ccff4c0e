"""The network CP-CFL pre-trains: the model's encoder with a projection head on top (SimCLR's shape)."""

from __future__ import annotations

import torch
from torch import nn

from p2pfl.config import RunConfig
from p2pfl.data.dataset import ArrayDataset
from p2pfl.models.initial import initial_model
from p2pfl.seeds import stream_seed


class ContrastiveNet(nn.Module):
    """Encoder f (the model's body) + projection head g (2-layer MLP): z = g(f(x))."""

    def __init__(self, model: nn.Module, projection_dim: int):
        super().__init__()
        self.body = model.body
        d = model.feature_dim
        self.projection = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, projection_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.body(x))


def contrastive_net(config: RunConfig, dataset: ArrayDataset, projection_dim: int) -> ContrastiveNet:
    """The run's initial encoder; the projection head from its own random stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(config.seed, "projection-head"))
        return ContrastiveNet(initial_model(config, dataset), projection_dim)
