"""Aggregation and assignment rules of the centralized methods (ALGORITHMS.md B1, B2): pure math.

FedAvg: size-weighted average. IFCA: each client takes the model with its lowest loss. CLoVE:
k-means on the clients' loss vectors, clusters matched to models by the Hungarian method, a random
first round, and a stop once every client kept its model for `patience` rounds.
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.metrics import silhouette_score

from p2pfl.algorithms.base import reject_unknown
from p2pfl.data.clusters import CLUSTER_KINDS
from p2pfl.errors import UserError


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


FEDERATED_OPTIONS: dict[str, Any] = {
    "models": 4,  # K cluster models (1 for FedAvg)
    "clusters": 4,  # true clusters the partition creates
    "cluster_kind": "rotation",
    "participation": 1.0,
    "local_epochs": 1,
    "client_optimizer": "adam",  # CLoVE authors: Adam, lr 1e-2
    "client_timeout": 60.0,
    "init": "random",  # random | identical (IFCA's collapse case)
}
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "fedavg": {},
    "ifca": {},
    "local-only": {},
    "clove": {"sqrt_losses": False, "unknown_k": False, "patience": 3},  # unknown_k: `models` is an upper bound
    "cpcfl": {"pretrain_mode": "federated",  # federated (FedAvg of encoder + head) | coordinator (its unlabeled set)
              "pretrain_rounds": 5, "pretrain_epochs": 1, "temperature": 0.5, "projection_dim": 32,
              "augment_shift": 1, "augment_noise": 0.1, "augment_erase": 0.5, "coordinator_samples": 400},
    "fedtsdp": {"warmup_rounds": 2, "public_samples": 100, "hopkins_threshold": 0.75, "hopkins_repeats": 20,
                "hopkins_dims": 2, "hopkins_patience": 2,  # rounds in a row with H >= threshold before clustering
                "js_threshold": 0.35, "cos_ratio": 0.5, "min_split_size": 4, "p_max": 2},
    "mtl": {"tasks": ["digit", "parity-size"], "decoders": ["linear", "mlp"], "samples_per_client": [0, 0],
            "mu": 1.0, "sharing": "mfed"},  # mu: best of the spec's {0.01, 0.1, 1} in benchmarks/clustered.py
}


def check_federated_options(options: Mapping[str, Any], method: str) -> dict[str, Any]:
    from p2pfl.algorithms.multitask import SHARING
    from p2pfl.data.tasks import DECODERS, TASKS

    merged = reject_unknown(options, {**FEDERATED_OPTIONS, **METHOD_OPTIONS[method]}, method)
    if merged["cluster_kind"] not in CLUSTER_KINDS:
        raise UserError(f"options.cluster_kind must be one of {', '.join(CLUSTER_KINDS)}")
    if not 0 < merged["participation"] <= 1:
        raise UserError(f"options.participation must be in (0, 1], got {merged['participation']}")
    if merged["init"] not in ("random", "identical") or merged["client_optimizer"] not in ("adam", "sgd"):
        raise UserError("options.init must be random or identical; options.client_optimizer adam or sgd")
    if merged["local_epochs"] < 1 or merged["models"] < 1 or merged["clusters"] < 1:
        raise UserError("options.local_epochs, options.models and options.clusters must be >= 1")
    if method == "fedavg":
        merged["models"] = 1
    if method == "cpcfl" and merged["pretrain_mode"] not in ("federated", "coordinator"):
        raise UserError(f"options.pretrain_mode must be federated or coordinator, got {merged['pretrain_mode']!r}")
    if method == "fedtsdp" and (merged["p_max"] < 1 or not 0 < merged["hopkins_threshold"] <= 1):
        raise UserError("options.p_max must be >= 1 and options.hopkins_threshold in (0, 1]")
    if method == "mtl":
        tasks = merged["tasks"]
        if not tasks or any(t not in TASKS for t in tasks):
            raise UserError(f"options.tasks must list tasks among {', '.join(TASKS)}, got {tasks!r}")
        if len(merged["decoders"]) != len(tasks) or any(d not in DECODERS for d in merged["decoders"]):
            raise UserError(f"options.decoders must give one of {', '.join(DECODERS)} per task ({len(tasks)})")
        if len(merged["samples_per_client"]) != len(tasks):
            raise UserError("options.samples_per_client must give one number per task (0: the whole shard)")
        if merged["sharing"] not in SHARING:
            raise UserError(f"options.sharing must be one of {', '.join(SHARING)}, got {merged['sharing']!r}")
        merged["clusters"] = len(tasks)
    return merged
