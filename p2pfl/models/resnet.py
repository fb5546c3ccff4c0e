"""CIFAR-style ResNet-20 (He et al. 2016, 3 stages x 3 basic blocks) with GroupNorm(2 groups).

GroupNorm instead of BatchNorm: CCL forwards a neighbour's parameters on local data, and batch
statistics would be stale there; gossip also cannot average running statistics meaningfully.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from p2pfl.models.base import FeatureClassifier

GROUPS = 2


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(GROUPS, outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(GROUPS, outputs)
        self.shortcut = nn.Sequential()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False),
                                          nn.GroupNorm(GROUPS, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNet20(FeatureClassifier):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, blocks_per_stage: int = 3):
        super().__init__()
        channels = input_shape[0]
        self.feature_dim = 64
        layers: list[nn.Module] = [nn.Conv2d(channels, 16, 3, 1, 1, bias=False), nn.GroupNorm(GROUPS, 16), nn.ReLU()]
        width = 16
        for stage, out in enumerate((16, 32, 64)):
            for block in range(blocks_per_stage):
                layers.append(BasicBlock(width, out, 2 if stage > 0 and block == 0 else 1))
                width = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(64, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
