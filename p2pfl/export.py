"""Final models as PyTorch state_dict files, loadable with the model's own constructor.

    run_dir/agents/NNN/model.pt   agent NNN's model after the last round
    run_dir/consensus_model.pt    the exact parameter average of the agents that finished

Coordinator methods write theirs themselves (global, cluster or per-client models, clusters.json):
see p2pfl/agents/coordinator_export.py.

Each file is a plain state_dict (tensors only: `torch.load(path, weights_only=True)` reads it).
For a model given by import path without features()/head() the keys are those of the user's own
module, so `Net(...).load_state_dict(torch.load(path))` works.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from p2pfl.agents import rundir
from p2pfl.config import RunConfig
from p2pfl.data.dataset import ArrayDataset
from p2pfl.models.state_files import save_flat

CONSENSUS_MODEL = "consensus_model.pt"


def agent_model_path(run_dir: Path, agent: int) -> Path:
    return rundir.model_path(run_dir, agent)


def final_params(config: RunConfig, run_dir: Path, agent: int) -> np.ndarray | None:
    path = rundir.params_path(run_dir, agent, config.rounds - 1)
    return np.load(path) if path.exists() else None


def save_state_dict(config: RunConfig, dataset: ArrayDataset, flat: np.ndarray, path: Path) -> Path:
    return save_flat(config, dataset, flat, path)


def export_agent_model(config: RunConfig, dataset: ArrayDataset, run_dir: Path, agent: int) -> Path | None:
    flat = final_params(config, run_dir, agent)
    return None if flat is None else save_state_dict(config, dataset, flat, agent_model_path(run_dir, agent))


def export_models(config: RunConfig, dataset: ArrayDataset, run_dir: Path) -> Path | None:
    """Every finished agent's model and the consensus model; returns the consensus file (None if none finished)."""
    finals = {a: final_params(config, run_dir, a) for a in range(config.agents)}
    finals = {a: flat for a, flat in finals.items() if flat is not None}
    for agent, flat in finals.items():
        save_state_dict(config, dataset, flat, agent_model_path(run_dir, agent))
    if not finals:
        return None
    return save_state_dict(config, dataset, np.mean(list(finals.values()), axis=0), Path(run_dir) / CONSENSUS_MODEL)


def load_model(run_dir: str | Path, agent: int | None = None) -> torch.nn.Module:
    """The consensus model (or agent `agent`'s) of a finished gossip run, rebuilt from its config.yaml."""
    from p2pfl.models.initial import initial_model
    from p2pfl.agents.setup import dataset_of
    from p2pfl.config import load_config
    from p2pfl.models.custom import inner_module

    run_dir = Path(run_dir)
    config = load_config(run_dir / rundir.CONFIG)
    model = inner_module(initial_model(config, dataset_of(config)))
    path = run_dir / CONSENSUS_MODEL if agent is None else agent_model_path(run_dir, agent)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model
