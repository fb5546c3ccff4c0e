"""The one registry: every algorithm by name, gossip or coordinator method, with all a run needs of it
(how to build it, its options dataclass, its flags, a summary). Adding an algorithm is one entry here;
nothing else branches on a name. It sits above p2pfl/algorithms/ (the math and the options) and
p2pfl/agents/methods/ (the coordinator and client classes), so neither imports the other's registry."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping

from p2pfl.agents.methods.base import LocalData, cluster_data
from p2pfl.agents.methods.clustered import ClusteredClient, CLoVECoordinator, FedAvgCoordinator, IFCACoordinator
from p2pfl.agents.methods.cpcfl import CPCFLClient, CPCFLCoordinator
from p2pfl.agents.methods.fedtsdp import FedTSDPClient, FedTSDPCoordinator
from p2pfl.agents.methods.local_only import LocalOnlyClient, LocalOnlyCoordinator
from p2pfl.agents.methods.multitask import MultiTaskClient, MultiTaskCoordinator, task_data
from p2pfl.algorithms.base import AgentContext
from p2pfl.algorithms.ccl import CCL, CCLOptions
from p2pfl.algorithms.choco import Choco, ChocoOptions
from p2pfl.algorithms.dsgd import DSGD, DSGDOptions, LocalOnly, LocalOptions
from p2pfl.algorithms.method_options import (CLoVEOptions, CPCFLOptions, FedAvgOptions, FederatedOptions,
                                             FedTSDPOptions, MultiTaskOptions)
from p2pfl.algorithms.options import Options, parse_options
from p2pfl.algorithms.qgm import QGM, QGMOptions


def clusters_of(options: FederatedOptions) -> str:
    return f"{options.cluster_kind} clusters"


def tasks_of(options: MultiTaskOptions) -> str:
    return f"{len(options.tasks)} tasks ({', '.join(options.tasks)})"


@dataclass(frozen=True)
class Method:
    """A coordinator method's two sides and how its clients get their data."""

    coordinator: type
    client: type
    local_data: LocalData = cluster_data  # the clustered partitions, or a task's relabelled shard
    split: Callable[[Any], str] = clusters_of  # how the clients differ, for titles
    model_count: bool = True  # whether the title names options.models (not per-task models)


@dataclass(frozen=True)
class Algorithm:
    """One registered name: a gossip algorithm (`factory`) or a coordinator method (`method`)."""

    summary: str
    options: type[Options]  # the `options:` it takes, with their types, defaults and checks
    factory: Callable[[AgentContext, Any], Any] | None = None  # builds one gossip agent's algorithm
    method: Method | None = None  # a coordinator peer (agent 0) and clients on a star
    unsupervised: bool = False  # also trains label-free models (an autoencoder scored by reconstruction)
    static_graph: bool = False  # keeps per-neighbour state (CHOCO's public copies): peers may not change per round

    @property
    def centralized(self) -> bool:
        return self.method is not None


ALGORITHMS: dict[str, Algorithm] = {
    "dpsgd": Algorithm("D-PSGD, no momentum", DSGDOptions, factory=partial(DSGD, momentum=False)),
    "dsgdm": Algorithm("D-PSGD with heavy-ball momentum", DSGDOptions, factory=partial(DSGD, nesterov=False)),
    "dsgdm-n": Algorithm("D-PSGD with Nesterov momentum", DSGDOptions, factory=partial(DSGD, nesterov=True)),
    "qgm": Algorithm("Quasi-Global Momentum (Lin et al. 2021)", QGMOptions, factory=QGM),
    "ccl": Algorithm("Cross-feature Contrastive Loss on top of QGM (Aketi & Roy 2024)", CCLOptions, factory=CCL),
    "choco": Algorithm("CHOCO-SGD: gossip of compressed differences to public copies (Koloskova et al. 2019)",
                       ChocoOptions, factory=Choco, static_graph=True),
    "local": Algorithm("local steps only (Nesterov momentum), no communication", LocalOptions,
                       factory=partial(LocalOnly, nesterov=True)),
    "fedavg": Algorithm("FedAvg", FedAvgOptions, method=Method(FedAvgCoordinator, ClusteredClient), unsupervised=True),
    "ifca": Algorithm("IFCA (Ghosh et al. 2020)", FederatedOptions, method=Method(IFCACoordinator, ClusteredClient),
                      unsupervised=True),
    "clove": Algorithm("CLoVE: k-means on loss vectors + Hungarian matching", CLoVEOptions,
                       method=Method(CLoVECoordinator, ClusteredClient), unsupervised=True),
    "cpcfl": Algorithm("CP-CFL: contrastive encoder pre-training, then IFCA", CPCFLOptions,
                       method=Method(CPCFLCoordinator, CPCFLClient)),
    "fedtsdp": Algorithm("FedTSDP: Hopkins-triggered two-stage clustering, adaptive personal layers", FedTSDPOptions,
                         method=Method(FedTSDPCoordinator, FedTSDPClient)),
    "mtl": Algorithm("multi-task FL: shared encoder, per-task decoders with a proximal term (M-Fed)", MultiTaskOptions,
                     method=Method(MultiTaskCoordinator, MultiTaskClient, task_data, tasks_of, model_count=False)),
    "local-only": Algorithm("clients train alone on their own data (floor of the coordinator methods)",
                            FederatedOptions, method=Method(LocalOnlyCoordinator, LocalOnlyClient), unsupervised=True),
}

# The coordinator methods' sides by name: a view of ALGORITHMS for the coordinator and client loops.
METHODS: dict[str, Method] = {name: entry.method for name, entry in ALGORITHMS.items() if entry.method is not None}


def parse_algorithm_options(name: str, options: Mapping[str, Any]) -> Options:
    """The config's `options:` for algorithm `name`, typed and checked (a UserError otherwise)."""
    return parse_options(ALGORITHMS[name].options, options, name)


def build_algorithm(name: str, ctx: AgentContext, options: Options) -> Any:
    """One gossip agent's algorithm, from its options as parse_algorithm_options gave them."""
    factory = ALGORITHMS[name].factory
    assert factory is not None, f"{name} is a coordinator method, not a gossip algorithm"
    return factory(ctx, options)
