"""Encoder-decoder models of the multi-task method: one encoder architecture for every client, a
decoder architecture per task (heterogeneous: a linear head or a small MLP)."""

from __future__ import annotations

import math

import torch
from torch import nn

from p2pfl.errors import UserError


def build_decoder(kind: str, feature_dim: int, outputs: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(feature_dim, outputs)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(feature_dim, 32), nn.ReLU(), nn.Linear(32, outputs))
    raise UserError(f"unknown decoder {kind!r}; choose linear or mlp")


class EncoderDecoder(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], decoder: str, outputs: int, hidden: int = 128,
                 feature_dim: int = 64):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(),
                                     nn.Linear(hidden, feature_dim), nn.ReLU())
        self.decoder = build_decoder(decoder, feature_dim, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
