"""Final models of a coordinator run as state_dict files, written by the coordinator and the clients
themselves: only they hold the models (a launcher or `spawn` sees the run folder alone). They go into
each agent's own folder, so `spawn` collects them with the metrics.

    agents/000/global_model.pt       FedAvg's global model
    agents/000/cluster_model_K.pt    IFCA / CLoVE / CP-CFL: cluster model K
    agents/000/clusters.json         the cluster each client ended in, and its model's file
    agents/NNN/model.pt              FedTSDP, multi-task, local-only: client NNN's own (personalised) model
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from p2pfl.agents import rundir
from p2pfl.config import RunConfig
from p2pfl.data.dataset import ArrayDataset
from p2pfl.models.state_files import save_flat, save_module

GLOBAL_MODEL = "global_model.pt"
CLUSTERS = "clusters.json"


def cluster_model_name(k: int) -> str:
    return f"cluster_model_{k}.pt"


def export_coordinator_models(config: RunConfig, dataset: ArrayDataset, run_dir: Path,
                              models: Mapping[int, torch.Tensor], clusters: Mapping[int, int] | None) -> list[Path]:
    """The coordinator's final models (cluster -> flat parameters of the run's model): one global model when
    there are no clusters, else one file per cluster model and clusters.json (client -> cluster -> file)."""
    folder = rundir.agent_dir(run_dir, 0)
    if clusters is None and len(models) > 1:
        raise ValueError(f"{len(models)} models and no clusters: which one is the global model?")
    names = {k: GLOBAL_MODEL if clusters is None else cluster_model_name(k) for k in models}
    written = [save_flat(config, dataset, flat.detach().cpu().numpy(), folder / names[k]) for k, flat in models.items()]
    if clusters is not None:
        table: dict[str, Any] = {"assignment": {str(c): k for c, k in sorted(clusters.items())}}
        if names:  # FedTSDP's clusters have no model of their own: each client's is in agents/NNN/model.pt
            table["model_files"] = {str(k): name for k, name in names.items()}
        (folder / CLUSTERS).write_text(json.dumps(table, indent=2))
        written.append(folder / CLUSTERS)
    return written


def export_client_model(model: torch.nn.Module | None, run_dir: Path, client: int) -> Path | None:
    """A client's personalised model (None: the method's results are the coordinator's models)."""
    return None if model is None else save_module(model, rundir.model_path(run_dir, client))


def exported_files(run_dir: Path, agents: int) -> list[str]:
    """The final-model files of a coordinator run folder, relative to it (for summary.json)."""
    run_dir = Path(run_dir)
    coordinator = rundir.agent_dir(run_dir, 0)
    clusters = sorted(coordinator.glob("cluster_model_*.pt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    found = [coordinator / GLOBAL_MODEL, *clusters, coordinator / CLUSTERS,
             *(rundir.model_path(run_dir, a) for a in range(1, agents))]
    return [str(p.relative_to(run_dir)) for p in found if p.exists()]
