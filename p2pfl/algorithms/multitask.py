"""Multi-task FL with heterogeneous encoder-decoder models (M-Fed, ALGORITHMS.md B5): pure math.

The encoder is averaged over every client (cross-task knowledge), each decoder only within its task,
and the local decoder is pulled toward its task's global decoder by a proximal term.
"""

from __future__ import annotations

from typing import Iterable

import torch

SHARING = ("mfed", "per-task", "local")


def proximal_term(decoder: Iterable[torch.Tensor], global_decoder: torch.Tensor, mu: float) -> torch.Tensor:
    """(mu/2) * ||D_i - D_tau||^2, with D_tau a flat vector of the task's global decoder."""
    flat = torch.cat([p.reshape(-1) for p in decoder])
    return 0.5 * mu * torch.sum((flat - global_decoder) ** 2)


def sharing_groups(tasks: dict[int, int], sharing: str) -> tuple[dict[int, object], dict[int, object]]:
    """Which clients average their encoder together, and which their decoder: M-Fed (encoder over all,
    decoder per task), per-task FedAvg (both per task), local (nothing shared)."""
    if sharing == "mfed":
        return {c: "all" for c in tasks}, dict(tasks)
    if sharing == "per-task":
        return dict(tasks), dict(tasks)
    return {c: c for c in tasks}, {c: c for c in tasks}
