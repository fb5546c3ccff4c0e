"""Algorithm registry keyed by name: no if-chains over algorithm names anywhere else."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping

from p2pfl.algorithms.base import AgentContext
from p2pfl.algorithms.ccl import CCL, CCL_OPTIONS
from p2pfl.algorithms.choco import CHOCO_OPTIONS, Choco
from p2pfl.algorithms.dsgd import DSGD, LocalOnly
from p2pfl.algorithms.method_options import FEDERATED_OPTIONS, METHOD_OPTIONS, check_federated_options
from p2pfl.algorithms.qgm import QGM, QGM_OPTIONS


@dataclass(frozen=True)
class AlgorithmEntry:
    factory: Callable[[AgentContext, Mapping[str, Any]], Any] | None
    check_options: Callable[[Mapping[str, Any]], Any]
    summary: str
    centralized: bool = False  # runs as a coordinator peer (agent 0) and clients on a star
    unsupervised: bool = False  # also trains label-free models (an autoencoder scored by reconstruction)
    static_graph: bool = False  # keeps per-neighbour state (CHOCO's public copies): peers may not change per round


ALGORITHMS: dict[str, AlgorithmEntry] = {
    "dpsgd": AlgorithmEntry(partial(DSGD, momentum=False), DSGD.check_options, "D-PSGD, no momentum"),
    "dsgdm": AlgorithmEntry(partial(DSGD, nesterov=False), DSGD.check_options, "D-PSGD with heavy-ball momentum"),
    "dsgdm-n": AlgorithmEntry(partial(DSGD, nesterov=True), DSGD.check_options, "D-PSGD with Nesterov momentum"),
    "qgm": AlgorithmEntry(QGM, QGM.check_options, "Quasi-Global Momentum (Lin et al. 2021)"),
    "ccl": AlgorithmEntry(CCL, CCL.check_options, "Cross-feature Contrastive Loss on top of QGM (Aketi & Roy 2024)"),
    "choco": AlgorithmEntry(Choco, Choco.check_options,
                            "CHOCO-SGD: gossip of compressed differences to public copies (Koloskova et al. 2019)",
                            static_graph=True),
    "local": AlgorithmEntry(partial(LocalOnly, nesterov=True), LocalOnly.check_options,
                            "local steps only (Nesterov momentum), no communication"),
    "fedavg": AlgorithmEntry(None, partial(check_federated_options, method="fedavg"), "FedAvg",
                             centralized=True, unsupervised=True),
    "ifca": AlgorithmEntry(None, partial(check_federated_options, method="ifca"), "IFCA (Ghosh et al. 2020)",
                           centralized=True, unsupervised=True),
    "clove": AlgorithmEntry(None, partial(check_federated_options, method="clove"),
                            "CLoVE: k-means on loss vectors + Hungarian matching",
                            centralized=True, unsupervised=True),
    "cpcfl": AlgorithmEntry(None, partial(check_federated_options, method="cpcfl"),
                            "CP-CFL: contrastive encoder pre-training, then IFCA", True),
    "fedtsdp": AlgorithmEntry(None, partial(check_federated_options, method="fedtsdp"),
                              "FedTSDP: Hopkins-triggered two-stage clustering, adaptive personal layers", True),
    "mtl": AlgorithmEntry(None, partial(check_federated_options, method="mtl"),
                          "multi-task FL: shared encoder, per-task decoders with a proximal term (M-Fed)", True),
    "local-only": AlgorithmEntry(None, partial(check_federated_options, method="local-only"),
                                 "clients train alone on their own data (floor of the coordinator methods)",
                                 centralized=True, unsupervised=True),
}


# Every option of each algorithm with its default: what `options:` may set, and the type each value must have
# (checked in validation.validate_config, before any agent starts).
OPTION_DEFAULTS: dict[str, Mapping[str, Any]] = {
    **{name: DSGD.OPTIONS for name in ("dpsgd", "dsgdm", "dsgdm-n", "local")},
    "qgm": QGM_OPTIONS,
    "ccl": {**QGM_OPTIONS, **CCL_OPTIONS},
    "choco": CHOCO_OPTIONS,
    **{name: {**FEDERATED_OPTIONS, **options} for name, options in METHOD_OPTIONS.items()},
}


def build_algorithm(name: str, ctx: AgentContext, options: Mapping[str, Any]) -> Any:
    return ALGORITHMS[name].factory(ctx, options)
