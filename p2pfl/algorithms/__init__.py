"""Algorithm registry keyed by name: no if-chains over algorithm names anywhere else."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping

from p2pfl.algorithms.base import AgentContext
from p2pfl.algorithms.dsgd import DSGD, LocalOnly


@dataclass(frozen=True)
class AlgorithmEntry:
    factory: Callable[[AgentContext, Mapping[str, Any]], Any]
    check_options: Callable[[Mapping[str, Any]], None]
    summary: str


ALGORITHMS: dict[str, AlgorithmEntry] = {
    "dpsgd": AlgorithmEntry(partial(DSGD, momentum=False), DSGD.check_options, "D-PSGD, no momentum"),
    "dsgdm": AlgorithmEntry(partial(DSGD, nesterov=False), DSGD.check_options, "D-PSGD with heavy-ball momentum"),
    "dsgdm-n": AlgorithmEntry(partial(DSGD, nesterov=True), DSGD.check_options, "D-PSGD with Nesterov momentum"),
    "local": AlgorithmEntry(partial(LocalOnly, nesterov=True), LocalOnly.check_options,
                            "local steps only (Nesterov momentum), no communication"),
}


def build_algorithm(name: str, ctx: AgentContext, options: Mapping[str, Any]) -> Any:
    return ALGORITHMS[name].factory(ctx, options)
