"""Split a training set over agents: IID or Dirichlet(alpha) label skew with equal shard sizes."""

from __future__ import annotations

import math

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


PARTITIONS = ("iid", "dirichlet", "lin")


def partition(labels: np.ndarray, agents: int, scheme: str, alpha: float, seed: int) -> list[np.ndarray]:
    if scheme == "iid":
        return iid_partition(labels, agents, seed)
    if scheme == "dirichlet":
        return dirichlet_partition(labels, agents, alpha, seed)
    if scheme == "lin":
        return lin_dirichlet_partition(labels, agents, alpha, seed)
    raise UserError(f"unknown partition {scheme!r}; choose one of {', '.join(PARTITIONS)}")


def lin_dirichlet_partition(labels: np.ndarray, agents: int, alpha: float, seed: int,
                            group_size: int = 10) -> list[np.ndarray]:
    """The Dirichlet split of Lin et al.'s code, which the QGM and CCL authors' trainers use.

    The shuffled (index, label) pairs are cut into groups of up to `group_size` workers; inside a
    group, per class, Dirichlet(alpha) proportions over its workers (workers already holding a
    fair share get none), redrawn until every worker holds half a fair share; the workers' lists
    are then concatenated and re-cut into equal chunks, one per agent, in that order (the order
    inside a shard is kept: it fixes the batch order a sampler draws from). The calls on
    numpy's RandomState(seed) are the reference's, so a seed gives the reference's shards.
    """
    if alpha <= 0:
        raise UserError(f"Dirichlet alpha must be > 0, got {alpha}; use e.g. 0.1 (skewed) or 10 (near IID)")
    if agents > len(labels):
        raise UserError(f"{agents} agents but only {len(labels)} training samples; use fewer agents")
    rng = np.random.RandomState(seed)
    total = len(labels)
    pairs = np.stack([np.arange(total), np.asarray(labels, dtype=np.int64)], axis=1)
    rng.shuffle(pairs)
    classes = len(np.unique(labels))
    groups = math.ceil(agents / group_size)
    workers: list[list[int]] = []
    start, left = 0, agents
    for g in range(groups):
        stop = total if g == groups - 1 else start + int(group_size / agents * total)
        members, k = pairs[start:stop], min(group_size, left)
        start, left = stop, left - group_size
        workers += _dirichlet_group(rng, members, k, classes, alpha)
    flat = np.asarray([i for worker in workers for i in worker], dtype=np.int64)
    chunk = int(1.0 / agents * total)
    return [flat[a * chunk:(a + 1) * chunk] for a in range(agents)]


def _dirichlet_group(rng: np.random.RandomState, members: np.ndarray, k: int, classes: int,
                     alpha: float) -> list[list[int]]:
    """One group's workers, redrawn until the smallest holds half a fair share."""
    fair = len(members) / k
    smallest = 0
    while smallest < int(0.50 * len(members) / k):
        lists: list[list[int]] = [[] for _ in range(k)]
        for cls in range(classes):
            in_class = members[members[:, 1] == cls, 0]
            proportions = rng.dirichlet(np.repeat(alpha, k))
            proportions = np.array([p * (len(held) < fair) for p, held in zip(proportions, lists)])
            with np.errstate(divide="ignore", invalid="ignore"):  # all full: the reference goes on regardless
                proportions = proportions / proportions.sum()
                cuts = (np.cumsum(proportions) * len(in_class)).astype(int)[:-1]
            lists = [held + part.tolist() for held, part in zip(lists, np.split(in_class, cuts))]
            smallest = min(len(held) for held in lists)
    return lists
