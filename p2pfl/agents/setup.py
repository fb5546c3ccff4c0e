"""What every agent of a run derives from the config alone (the graph, the data, the run id)."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from p2pfl.config import RunConfig, validate_config
from p2pfl.data import load_dataset
from p2pfl.errors import UserError
from p2pfl.data.dataset import ArrayDataset
from p2pfl.models import build_model
from p2pfl.topologies import build_topology


@dataclass
class RunSetup:
    config: RunConfig
    graph: nx.Graph
    dataset: ArrayDataset
    run_id: str


def graph_of(config: RunConfig) -> nx.Graph:
    from p2pfl.algorithms import ALGORITHMS

    if ALGORITHMS[config.algorithm].centralized:  # the coordinator peer (agent 0) in the middle of a star
        config.topology.kind = "star"
    t = config.topology
    return build_topology(t.kind, config.agents, seed=config.seed, degree=t.degree, p=t.p, offsets=tuple(t.offsets),
                          path=t.path)


def dataset_of(config: RunConfig) -> ArrayDataset:
    from p2pfl.plugins import is_import_path

    if is_import_path(config.data.name):  # the user's own loader, package.module:function
        from p2pfl.data.custom import load_custom

        return load_custom(config.data.name, config.data.path)
    return load_dataset(config.data.name, config.data.path, config.data.torchvision_name)


def prepare(config: RunConfig) -> RunSetup:
    validate_config(config)
    graph = graph_of(config)
    if graph.number_of_nodes() != config.agents:  # a topology file decides the number of agents
        raise UserError(f"topology has {graph.number_of_nodes()} nodes but agents is {config.agents}; "
                        f"set --agents {graph.number_of_nodes()}")
    dataset = dataset_of(config)
    build_model(config.model, dataset.input_shape, dataset.num_classes, config.model_args)  # a mismatch fails here, once
    return RunSetup(config, graph, dataset, config.resolved_run_id())
