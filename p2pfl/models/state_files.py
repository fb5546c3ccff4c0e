"""A model as a plain state_dict file (tensors only, on the CPU): what `torch.load(path, weights_only=True)`
reads back into the model's own constructor. Shared by the gossip export (p2pfl/export.py) and the
coordinator's (p2pfl/agents/coordinator_export.py), which sit on different layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import vector_to_parameters

from p2pfl.config import RunConfig
from p2pfl.data.dataset import ArrayDataset
from p2pfl.models.custom import inner_module
from p2pfl.models.initial import initial_model


def save_module(model: torch.nn.Module, path: Path) -> Path:
    """A live model's state_dict, moved to the CPU (a file written on a GPU loads anywhere); a model given by
    import path is saved unwrapped, with the keys of the user's own module."""
    torch.save({k: v.detach().cpu() for k, v in inner_module(model).state_dict().items()}, path)
    return path


def save_flat(config: RunConfig, dataset: ArrayDataset, flat: np.ndarray, path: Path) -> Path:
    """Flat parameters (the order of model.parameters()) of the run's model as its state_dict."""
    model = initial_model(config, dataset)
    vector_to_parameters(torch.from_numpy(np.ascontiguousarray(flat)), model.parameters())
    return save_module(model, path)
