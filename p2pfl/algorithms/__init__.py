"""Algorithm registry keyed by name: no if-chains over algorithm names anywhere else."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping

from p2pfl.algorithms.base import AgentContext
from p2pfl.algorithms.ccl import CCL, CCLOptions
from p2pfl.algorithms.choco import Choco, ChocoOptions
from p2pfl.algorithms.dsgd import DSGD, DSGDOptions, LocalOnly, LocalOptions
from p2pfl.algorithms.method_options import (CLoVEOptions, CPCFLOptions, FedAvgOptions, FederatedOptions,
                                             FedTSDPOptions, MultiTaskOptions)
from p2pfl.algorithms.options import Options, parse_options
from p2pfl.algorithms.qgm import QGM, QGMOptions


@dataclass(frozen=True)
class AlgorithmEntry:
    factory: Callable[[AgentContext, Any], Any] | None
    options: type[Options]  # the `options:` it takes, with their defaults and checks
    summary: str
    centralized: bool = False  # runs as a coordinator peer (agent 0) and clients on a star
    unsupervised: bool = False  # also trains label-free models (an autoencoder scored by reconstruction)
    static_graph: bool = False  # keeps per-neighbour state (CHOCO's public copies): peers may not change per round


ALGORITHMS: dict[str, AlgorithmEntry] = {
    "dpsgd": AlgorithmEntry(partial(DSGD, momentum=False), DSGDOptions, "D-PSGD, no momentum"),
    "dsgdm": AlgorithmEntry(partial(DSGD, nesterov=False), DSGDOptions, "D-PSGD with heavy-ball momentum"),
    "dsgdm-n": AlgorithmEntry(partial(DSGD, nesterov=True), DSGDOptions, "D-PSGD with Nesterov momentum"),
    "qgm": AlgorithmEntry(QGM, QGMOptions, "Quasi-Global Momentum (Lin et al. 2021)"),
    "ccl": AlgorithmEntry(CCL, CCLOptions, "Cross-feature Contrastive Loss on top of QGM (Aketi & Roy 2024)"),
    "choco": AlgorithmEntry(Choco, ChocoOptions,
                            "CHOCO-SGD: gossip of compressed differences to public copies (Koloskova et al. 2019)",
                            static_graph=True),
    "local": AlgorithmEntry(partial(LocalOnly, nesterov=True), LocalOptions,
                            "local steps only (Nesterov momentum), no communication"),
    "fedavg": AlgorithmEntry(None, FedAvgOptions, "FedAvg",
                             centralized=True, unsupervised=True),
    "ifca": AlgorithmEntry(None, FederatedOptions, "IFCA (Ghosh et al. 2020)",
                           centralized=True, unsupervised=True),
    "clove": AlgorithmEntry(None, CLoVEOptions,
                            "CLoVE: k-means on loss vectors + Hungarian matching",
                            centralized=True, unsupervised=True),
    "cpcfl": AlgorithmEntry(None, CPCFLOptions,
                            "CP-CFL: contrastive encoder pre-training, then IFCA", True),
    "fedtsdp": AlgorithmEntry(None, FedTSDPOptions,
                              "FedTSDP: Hopkins-triggered two-stage clustering, adaptive personal layers", True),
    "mtl": AlgorithmEntry(None, MultiTaskOptions,
                          "multi-task FL: shared encoder, per-task decoders with a proximal term (M-Fed)", True),
    "local-only": AlgorithmEntry(None, FederatedOptions,
                                 "clients train alone on their own data (floor of the coordinator methods)",
                                 centralized=True, unsupervised=True),
}


def parse_algorithm_options(name: str, options: Mapping[str, Any]) -> Options:
    """The config's `options:` for algorithm `name`, typed and checked (a UserError otherwise)."""
    return parse_options(ALGORITHMS[name].options, options, name)


def build_algorithm(name: str, ctx: AgentContext, options: Options) -> Any:
    return ALGORITHMS[name].factory(ctx, options)
