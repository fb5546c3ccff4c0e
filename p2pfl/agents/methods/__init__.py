"""Registry of the centralized methods: name -> (coordinator strategy, client strategy)."""

from __future__ import annotations

from p2pfl.agents.methods.clustered import ClusteredClient, ClusteredCoordinator
from p2pfl.agents.methods.fedtsdp import FedTSDPClient, FedTSDPCoordinator
from p2pfl.agents.methods.local_only import LocalOnlyClient, LocalOnlyCoordinator
from p2pfl.agents.methods.multitask import MultiTaskClient, MultiTaskCoordinator

METHODS = {
    "fedavg": (ClusteredCoordinator, ClusteredClient),
    "ifca": (ClusteredCoordinator, ClusteredClient),
    "clove": (ClusteredCoordinator, ClusteredClient),
    "cpcfl": (ClusteredCoordinator, ClusteredClient),
    "fedtsdp": (FedTSDPCoordinator, FedTSDPClient),
    "mtl": (MultiTaskCoordinator, MultiTaskClient),
    "local-only": (LocalOnlyCoordinator, LocalOnlyClient),
}
