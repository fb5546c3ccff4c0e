"""Partitions with cluster structure: every client belongs to a known cluster whose data is transformed.

rotation: images rotated by 0/90/180/270 degrees per cluster; label-swap: a fixed label permutation
per cluster (cluster 0 keeps the labels); label-groups: disjoint class groups per cluster. The true
cluster id of every client is returned so the coordinator can score its assignment (ARI).
"""

from __future__ import annotations

import numpy as np

from p2pfl.data.dataset import ArrayDataset
from p2pfl.data.partition import iid_partition
from p2pfl.errors import UserError
from p2pfl.seeds import stream_seed

CLUSTER_KINDS = ("rotation", "label-swap", "label-groups")



def true_cluster(client: int, clients: int, clusters: int) -> int:
    """Clients are split into equal consecutive blocks, one per cluster."""
    return client * clusters // clients


def label_permutation(cluster: int, classes: int, seed: int) -> np.ndarray:
    """Cluster 0 keeps the labels; each other cluster permutes them, its permutation drawn from the run seed."""
    if cluster == 0:
        return np.arange(classes)
    return np.random.default_rng(stream_seed(seed, "label-swap", cluster)).permutation(classes)


def transform(kind: str, cluster: int, x: np.ndarray, y: np.ndarray, classes: int, seed: int):
    if kind == "rotation":
        return np.ascontiguousarray(np.rot90(x, k=cluster, axes=(-2, -1))), y
    if kind == "label-swap":
        return x, label_permutation(cluster, classes, seed)[y]
    if kind == "label-groups":
        return x, y
    raise UserError(f"unknown cluster kind {kind!r}; choose one of {', '.join(CLUSTER_KINDS)}")


def client_data(dataset: ArrayDataset, client: int, clients: int, clusters: int, kind: str, seed: int):
    """(x, y, x_test, y_test, cluster) of one client; label-groups restricts classes per cluster."""
    cluster = true_cluster(client, clients, clusters)
    classes = dataset.num_classes
    if kind == "label-groups":
        groups = np.array_split(np.arange(classes), clusters)
        keep_train = np.isin(dataset.y_train, groups[cluster])
        keep_test = np.isin(dataset.y_test, groups[cluster])
        members = [c for c in range(clients) if true_cluster(c, clients, clusters) == cluster]
        indices = np.flatnonzero(keep_train)
        shard = indices[iid_partition(dataset.y_train[indices], len(members), seed)[members.index(client)]]
        return (dataset.x_train[shard], dataset.y_train[shard], dataset.x_test[keep_test],
                dataset.y_test[keep_test], cluster)
    shard = iid_partition(dataset.y_train, clients, seed)[client]
    x, y = transform(kind, cluster, dataset.x_train[shard], dataset.y_train[shard], classes, seed)
    x_test, y_test = transform(kind, cluster, dataset.x_test, dataset.y_test, classes, seed)
    return x, y, x_test, y_test, cluster
