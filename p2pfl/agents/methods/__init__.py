"""Registry of the centralized methods: name -> coordinator strategy, client strategy, and the
function that gives a client its local data (the clustered partitions, or a task's relabelled shard)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from p2pfl.agents.methods.base import LocalData, cluster_data
from p2pfl.agents.methods.clustered import ClusteredClient, CLoVECoordinator, FedAvgCoordinator, IFCACoordinator
from p2pfl.agents.methods.cpcfl import CPCFLClient, CPCFLCoordinator
from p2pfl.agents.methods.fedtsdp import FedTSDPClient, FedTSDPCoordinator
from p2pfl.agents.methods.local_only import LocalOnlyClient, LocalOnlyCoordinator
from p2pfl.agents.methods.multitask import MultiTaskClient, MultiTaskCoordinator, task_data
from p2pfl.algorithms.method_options import FederatedOptions, MultiTaskOptions


def clusters_of(options: FederatedOptions) -> str:
    return f"{options.cluster_kind} clusters"


def tasks_of(options: MultiTaskOptions) -> str:
    return f"{len(options.tasks)} tasks ({', '.join(options.tasks)})"


class Method(NamedTuple):
    coordinator: type
    client: type
    local_data: LocalData = cluster_data
    split: Callable[[Any], str] = clusters_of  # how the clients differ, for titles
    model_count: bool = True  # whether the title names options.models (not per-task models)


METHODS: dict[str, Method] = {
    "fedavg": Method(FedAvgCoordinator, ClusteredClient),
    "ifca": Method(IFCACoordinator, ClusteredClient),
    "clove": Method(CLoVECoordinator, ClusteredClient),
    "cpcfl": Method(CPCFLCoordinator, CPCFLClient),
    "fedtsdp": Method(FedTSDPCoordinator, FedTSDPClient),
    "mtl": Method(MultiTaskCoordinator, MultiTaskClient, task_data, tasks_of, model_count=False),
    "local-only": Method(LocalOnlyCoordinator, LocalOnlyClient),
}
