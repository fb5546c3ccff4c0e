"""Registry of the centralized methods: name -> coordinator strategy, client strategy, and the
function that gives a client its local data (the clustered partitions, or a task's relabelled shard)."""

from __future__ import annotations

from typing import NamedTuple

from p2pfl.agents.methods.base import LocalData, cluster_data
from p2pfl.agents.methods.clustered import ClusteredClient, ClusteredCoordinator
from p2pfl.agents.methods.fedtsdp import FedTSDPClient, FedTSDPCoordinator
from p2pfl.agents.methods.local_only import LocalOnlyClient, LocalOnlyCoordinator
from p2pfl.agents.methods.multitask import MultiTaskClient, MultiTaskCoordinator, task_data


class Method(NamedTuple):
    coordinator: type
    client: type
    local_data: LocalData = cluster_data


METHODS: dict[str, Method] = {
    "fedavg": Method(ClusteredCoordinator, ClusteredClient),
    "ifca": Method(ClusteredCoordinator, ClusteredClient),
    "clove": Method(ClusteredCoordinator, ClusteredClient),
    "cpcfl": Method(ClusteredCoordinator, ClusteredClient),
    "fedtsdp": Method(FedTSDPCoordinator, FedTSDPClient),
    "mtl": Method(MultiTaskCoordinator, MultiTaskClient, task_data),
    "local-only": Method(LocalOnlyCoordinator, LocalOnlyClient),
}
