"""Aggregation and assignment rules of the centralized methods (ALGORITHMS.md B1, B2): pure math.

FedAvg: size-weighted average. IFCA: each client takes the model with its lowest loss. CLoVE:
k-means on the clients' loss vectors, clusters matched to models by the Hungarian method, a random
first round, and a stop once every client kept its model for `patience` rounds.
"""

from __future__ import annotations

import math
from typing import Hashable, Mapping, Sequence

import numpy as np
import torch

# scikit-learn and scipy are imported where they are used: every agent process imports this module, and
# a gossip agent that never clusters would otherwise carry ~100 MB of them in its resident memory.


def usable_weight(weight: float) -> bool:
    return math.isfinite(weight) and weight > 0


def weighted_average(vectors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """sum_i n_i theta_i / sum_i n_i over the clients with a positive, finite n_i."""
    kept = [(v, float(w)) for v, w in zip(vectors, weights) if usable_weight(float(w))]
    if not kept:
        raise ValueError(f"no positive sample count among the weights {list(weights)}: nothing to average")
    total = sum(w for _, w in kept)
    return sum(w / total * v for v, w in kept)


def group_average(vectors: Mapping[int, torch.Tensor], groups: Mapping[int, Hashable],
                  sizes: Mapping[int, float]) -> dict[Hashable, torch.Tensor]:
    """Size-weighted average of the clients' vectors within each group (a cluster, a task, everyone);
    a client without a positive sample count is left out, and a group left empty is absent."""
    members: dict[Hashable, list[int]] = {}
    for client in sorted(vectors):
        if usable_weight(float(sizes[client])):
            members.setdefault(groups[client], []).append(client)
    return {g: weighted_average([vectors[c] for c in cs], [sizes[c] for c in cs]) for g, cs in members.items()}


def aggregate_per_model(models: list[torch.Tensor], updates: Mapping[int, tuple[int, torch.Tensor, float]]) -> list[torch.Tensor]:
    """updates: client -> (model index, trained params, n_i). A model nobody trained keeps its parameters."""
    averaged = group_average({c: u[1] for c, u in updates.items()}, {c: u[0] for c, u in updates.items()},
                             {c: u[2] for c, u in updates.items()})
    return [averaged.get(k, current) for k, current in enumerate(models)]


def check_finite(losses: np.ndarray) -> None:
    """argmin and k-means give a NaN row some model silently (or crash): the coordinator drops such
    replies first (agents.federated.unusable), so one arriving here is a bug."""
    if not np.isfinite(losses).all():
        raise ValueError("loss matrix holds NaN or infinity; drop the diverged clients' rows first")


def ifca_assign(losses: np.ndarray) -> np.ndarray:
    """k_i = argmin_k loss_i(theta_k); rows are clients."""
    check_finite(losses)
    return np.argmin(losses, axis=1)


def random_assignment(clients: int, models: int, rng: np.random.Generator) -> np.ndarray:
    """Random, with every model given at least one client (when there are enough clients)."""
    base = np.arange(clients) % models
    return rng.permutation(base)


def match_clusters_to_models(labels: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """Hungarian matching on C[c, m] = sum_{i in c} L_i[m]; returns the model of every client."""
    from scipy.optimize import linear_sum_assignment

    clusters, models = int(labels.max()) + 1, losses.shape[1]
    cost = np.zeros((clusters, models))
    for c in range(clusters):
        cost[c] = losses[labels == c].sum(axis=0)
    rows, cols = linear_sum_assignment(cost)
    mapping = dict(zip(rows, cols))
    return np.array([mapping[c] for c in labels])


def choose_k(features: np.ndarray, k_max: int, margin: float = 1.1) -> np.ndarray:
    """Unknown K: Ward clustering for K in [2, min(n, k_max)], scored by silhouette; a larger K wins
    only if its score beats the best so far by `margin` (ALGORITHMS.md B2.6). Returns the labels."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import silhouette_score

    best_labels, best_score = np.zeros(len(features), dtype=int), -np.inf
    for k in range(2, min(len(features) - 1, k_max) + 1):
        labels = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(features)
        score = silhouette_score(features, labels)
        if best_score == -np.inf or score > best_score * margin:
            best_labels, best_score = labels, score
    return best_labels


def clove_assign(losses: np.ndarray, seed: int, use_sqrt: bool = False, unknown_k: bool = False) -> np.ndarray:
    """k-means (k-means++ init, fixed seed) on the loss vectors, then Hungarian matching to the models;
    with `unknown_k` the number of clusters is chosen by silhouette (at most the number of models)."""
    from sklearn.cluster import KMeans

    check_finite(losses)
    features = np.sqrt(np.maximum(losses, 0)) if use_sqrt else losses
    if unknown_k:
        return match_clusters_to_models(choose_k(features, losses.shape[1]), losses)
    k = min(losses.shape[1], len(np.unique(features, axis=0)))
    labels = KMeans(n_clusters=k, init="k-means++", n_init=10, random_state=seed).fit_predict(features)
    return match_clusters_to_models(labels, losses)


class StabilityTracker:
    """Clustering stops once every client kept its model for `patience` consecutive rounds."""

    def __init__(self, patience: int = 3):
        self.patience = patience
        self.kept: dict[int, int] = {}
        self.previous: dict[int, int] = {}
        self.frozen = False

    def update(self, assignment: Mapping[int, int]) -> bool:
        for client, model in assignment.items():
            self.kept[client] = self.kept.get(client, 0) + 1 if self.previous.get(client) == model else 0
            self.previous[client] = model
        self.frozen = self.frozen or (bool(self.kept) and min(self.kept.values()) >= self.patience)
        return self.frozen
