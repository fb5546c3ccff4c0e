"""Split a training set over agents: IID or Dirichlet(alpha) label skew with equal shard sizes."""

from __future__ import annotations

import numpy as np

from p2pfl.errors import UserError


def iid_partition(labels: np.ndarray, agents: int, seed: int) -> list[np.ndarray]:
    """A random equal split (the remainder is dropped so every agent has the same size)."""
    order = np.random.default_rng(seed).permutation(len(labels))
    size = len(labels) // agents
    return [np.sort(order[i * size:(i + 1) * size]) for i in range(agents)]


def dirichlet_partition(labels: np.ndarray, agents: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Per class, Dirichlet(alpha) proportions over agents; every agent ends with len // agents samples.

    A class's samples go to agents in those proportions, capped by each agent's remaining room;
    what overflows is spread over the agents that still have room, proportions renormalised
    (ALGORITHMS.md A4). alpha = 0.01 gives nearly one class per agent.
    """
    if alpha <= 0:
        raise UserError(f"Dirichlet alpha must be > 0, got {alpha}; use e.g. 0.1 (skewed) or 10 (near IID)")
    if agents > len(labels):
        raise UserError(f"{agents} agents but only {len(labels)} training samples; use fewer agents")
    rng = np.random.default_rng(seed)
    room = np.full(agents, len(labels) // agents)
    shards: list[list[np.ndarray]] = [[] for _ in range(agents)]
    for cls in rng.permutation(np.unique(labels)):
        members = rng.permutation(np.flatnonzero(labels == cls))
        proportions = rng.dirichlet(np.full(agents, alpha))
        start = 0
        while start < len(members) and room.sum() > 0:
            open_ = room > 0
            weights = proportions * open_
            weights = weights / weights.sum() if weights.sum() > 0 else open_ / open_.sum()
            remaining = len(members) - start
            want = _largest_remainder(weights * remaining)
            take = np.minimum(want, room)
            if take.sum() == 0:  # rounding gave nothing to the open agents: give one to the likeliest
                take[np.argmax(weights)] = 1
            for agent in np.flatnonzero(take):
                shards[agent].append(members[start:start + take[agent]])
                start += take[agent]
            room -= take
    return [np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64) for parts in shards]


def _largest_remainder(quotas: np.ndarray) -> np.ndarray:
    """Integers summing to round(sum(quotas)), each floor or ceil of its quota."""
    base = np.floor(quotas).astype(np.int64)
    short = int(round(quotas.sum())) - int(base.sum())
    if short > 0:
        base[np.argsort(-(quotas - base), kind="stable")[:short]] += 1
    return base


def partition(labels: np.ndarray, agents: int, scheme: str, alpha: float, seed: int) -> list[np.ndarray]:
    if scheme == "iid":
        return iid_partition(labels, agents, seed)
    if scheme == "dirichlet":
        return dirichlet_partition(labels, agents, alpha, seed)
    raise UserError(f"unknown partition {scheme!r}; choose iid or dirichlet")
