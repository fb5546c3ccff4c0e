"""The parameters every participant of a run starts from, for gossip agents and coordinator methods alike."""

from __future__ import annotations

import torch

from p2pfl.config import RunConfig
from p2pfl.data.dataset import ArrayDataset
from p2pfl.models import build_model


def initial_model(config: RunConfig, dataset: ArrayDataset, seed: int | None = None) -> torch.nn.Module:
    """Every agent starts from the same parameters: built under the run seed (or `seed`, for a model
    that must differ, e.g. one of several cluster models)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed if seed is None else seed)
        return build_model(config.model, dataset.input_shape, dataset.num_classes, config.model_args)
