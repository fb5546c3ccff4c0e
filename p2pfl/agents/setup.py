"""What every agent of a run derives from the config alone (the graph, the data, the run id)."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from p2pfl.algorithms.options import Options
from p2pfl.config import RunConfig
from p2pfl.constants import ROUND_WINDOW
from p2pfl.validation import validate_config
from p2pfl.data import load_dataset
from p2pfl.errors import UserError
from p2pfl.data.dataset import ArrayDataset
from p2pfl.models import build_model
from p2pfl.topologies import DYNAMIC_TOPOLOGIES, TopologySequence, build_topology


@dataclass
class RunSetup:
    config: RunConfig
    graph: nx.Graph  # the links: a fixed topology, or the union of a dynamic one's rounds
    dataset: ArrayDataset
    run_id: str
    sequence: TopologySequence | None = None  # the round's graph when the topology changes every round
    round_window: int = ROUND_WINDOW  # rounds ahead a peer's message is kept (farther with a dynamic topology)
    options: Options | None = None  # the algorithm's options as validation parsed them (None: each loop parses)


def sequence_of(config: RunConfig) -> TopologySequence | None:
    """The per-round graphs of a dynamic topology (seeded by the run seed, so every agent derives them alike)."""
    if config.topology.kind not in DYNAMIC_TOPOLOGIES:
        return None
    return TopologySequence(config.topology.kind, config.agents, config.seed, config.topology.degree)


def graph_of(config: RunConfig) -> nx.Graph:
    from p2pfl.registry import ALGORITHMS

    if ALGORITHMS[config.algorithm].centralized:  # the coordinator peer (agent 0) in the middle of a star
        config.topology.kind = "star"
    sequence = sequence_of(config)
    if sequence is not None:
        return sequence.union(config.rounds)
    t = config.topology
    return build_topology(t.kind, config.agents, seed=config.seed, degree=t.degree, p=t.p, offsets=tuple(t.offsets),
                          path=t.path)


def dataset_of(config: RunConfig) -> ArrayDataset:
    from p2pfl.plugins import is_import_path

    d = config.data
    if is_import_path(d.name):  # the user's own loader, package.module:function
        from p2pfl.data.custom import load_custom

        return load_custom(d.name, d.path)
    return load_dataset(d.name, d.path, d.torchvision_name, d.normalize, d.mean, d.std)


def prepare(config: RunConfig) -> RunSetup:
    options = validate_config(config)
    graph = graph_of(config)
    if graph.number_of_nodes() != config.agents:  # a topology file decides the number of agents
        raise UserError(f"topology has {graph.number_of_nodes()} nodes but agents is {config.agents}; "
                        f"set --agents {graph.number_of_nodes()}")
    dataset = dataset_of(config)
    model = build_model(config.model, dataset.input_shape, dataset.num_classes, config.model_args)  # a mismatch fails here
    check_message_cap(config, sum(p.numel() * p.element_size() for p in model.parameters()))
    sequence = sequence_of(config)
    window = max(ROUND_WINDOW, sequence.max_lag(config.rounds)) if sequence else ROUND_WINDOW
    return RunSetup(config, graph, dataset, config.resolved_run_id(), sequence, window, options)


def check_message_cap(config: RunConfig, model_bytes: int) -> None:
    """Every algorithm sends at least the model's parameters in one message: a cap below that would drop
    every message and read as unreachable neighbours."""
    cap = int(config.network.max_message_mb * 2**20)
    if model_bytes > cap:
        raise UserError(f"network.max_message_mb {config.network.max_message_mb:g} is below the size of one model "
                        f"({model_bytes / 2**20:.2f} MB of parameters of {config.model}); raise it to at least "
                        f"{2 * model_bytes / 2**20:.1f}")
