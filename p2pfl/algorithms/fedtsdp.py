"""FedTSDP's decisions (ALGORITHMS.md B4): is there cluster structure (Hopkins), which clients group
together (Jensen-Shannon divergence of outputs, then cosine similarity of updates), and how many top
layers stay personal.

Hopkins convention fixed here: H = sum u^d / (sum u^d + sum w^d), u = distance from a uniform point
in the data's bounding box to its nearest data point, w = distance from a sampled data point to its
nearest other data point, d = the dimension. H -> 1: clustered; H ~ 0.5: uniform; H -> 0: regular.
"""

from __future__ import annotations

import numpy as np


def hopkins_once(points: np.ndarray, sampled: np.ndarray, uniform: np.ndarray) -> float:
    """One draw: `sampled` are row indices of `points`, `uniform` are points in the bounding box."""
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    w = tree.query(points[sampled], k=2)[0][:, 1]
    u = tree.query(uniform, k=1)[0]
    d = points.shape[1]
    # Scale by the largest distance first: u^d and w^d under- or overflow for d of a few dozen.
    scale = max(float(u.max()), float(w.max())) or 1.0
    ud, wd = np.sum((u / scale) ** d), np.sum((w / scale) ** d)
    return float(ud / (ud + wd)) if ud + wd > 0 else 0.5


def hopkins(points: np.ndarray, rng: np.random.Generator, sample_fraction: float = 0.5, repeats: int = 20) -> float:
    """Amended sampling: the mean over `repeats` draws of m = fraction * n points and m uniform points."""
    n = len(points)
    m = max(1, int(round(sample_fraction * n)))
    low, high = points.min(axis=0), points.max(axis=0)
    draws = [hopkins_once(points, rng.choice(n, m, replace=False), rng.uniform(low, high, (m, points.shape[1])))
             for _ in range(repeats)]
    return float(np.mean(draws))


def reduce_dims(points: np.ndarray, dims: int) -> np.ndarray:
    """The Hopkins test needs low dimensions (a bounding box of 1,000 dimensions is empty); project by PCA."""
    from sklearn.decomposition import PCA

    dims = min(dims, len(points) - 1, points.shape[1])
    return PCA(n_components=dims, random_state=0).fit_transform(points) if dims < points.shape[1] else points


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """JS(p||q) in bits over the last axis, in [0, 1] (scipy gives the distance, its square root)."""
    from scipy.spatial.distance import jensenshannon

    return jensenshannon(np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64), base=2, axis=-1) ** 2


def pairwise_js(outputs: np.ndarray) -> np.ndarray:
    """outputs: (clients, samples, classes) softmax outputs on the public batch -> mean JS per pair."""
    n = len(outputs)
    distance = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            distance[i, j] = distance[j, i] = float(js_divergence(outputs[i], outputs[j]).mean())
    return distance


def nearest_cluster(output: np.ndarray, members: np.ndarray, labels: np.ndarray) -> int:
    """The cluster whose members' outputs are closest on average (mean JS divergence: stage 1's average
    linkage), for a client that was not among those clustered. Stage 2's update directions are not used:
    such a client's last update was made against an older model."""
    distance = np.array([float(js_divergence(output, member).mean()) for member in members])
    return int(min(np.unique(labels), key=lambda k: distance[labels == k].mean()))


def stage1_groups(distance: np.ndarray, threshold: float) -> np.ndarray:
    """Average-linkage agglomerative clustering of a distance matrix cut at `threshold` (K not fixed)."""
    from sklearn.cluster import AgglomerativeClustering

    if len(distance) < 2:
        return np.zeros(len(distance), dtype=int)
    return AgglomerativeClustering(n_clusters=None, distance_threshold=threshold, metric="precomputed",
                                   linkage="average").fit_predict(distance)


def cosine_matrix(updates: np.ndarray) -> np.ndarray:
    unit = updates / np.maximum(np.linalg.norm(updates, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def stage2_split(updates: np.ndarray, ratio: float, min_size: int) -> np.ndarray:
    """Sattler-style bipartition of one group by cosine similarity of its updates (complete linkage),
    kept only when the halves are far apart: mean cross-half similarity < `ratio` x mean within-half
    similarity. Relative, because the scale of the similarities differs between data sets (digits:
    about 0.5 within a cluster, Fashion-MNIST 0.2). Labels 0/1; all 0 when the group stays whole."""
    from sklearn.cluster import AgglomerativeClustering

    n = len(updates)
    whole = np.zeros(n, dtype=int)
    if n < min_size:
        return whole
    similarity = cosine_matrix(updates)
    halves = AgglomerativeClustering(n_clusters=2, metric="precomputed", linkage="complete").fit_predict(1 - similarity)
    same = (halves[:, None] == halves[None, :]) & ~np.eye(n, dtype=bool)
    cross = halves[:, None] != halves[None, :]
    if not same.any():
        return whole
    within, across = similarity[same].mean(), similarity[cross].mean()
    return halves if within > 0 and across < ratio * within else whole


def two_stage_clusters(divergence: np.ndarray, updates: np.ndarray, js_threshold: float, cos_ratio: float,
                       min_split_size: int) -> np.ndarray:
    """Stage 1 by output divergence (`pairwise_js`), stage 2 by update direction inside each stage-1 group."""
    groups = stage1_groups(divergence, js_threshold)
    labels = np.zeros(len(groups), dtype=int)
    next_label = 0
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        split = stage2_split(updates[members], cos_ratio, min_split_size)
        for s in np.unique(split):
            labels[members[split == s]] = next_label
            next_label += 1
    return labels


def within_and_across(matrix: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean of a pairwise matrix over pairs in the same group and over pairs in different groups."""
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    within = matrix[same & off_diagonal]
    across = matrix[~same]
    return (float(within.mean()) if within.size else float("nan"), float(across.mean()) if across.size else float("nan"))


def personalization_layers(h: float, p_max: int) -> int:
    """p = clip(round(p_max * (H - 0.5) / 0.5), 1, p_max): more skew keeps more top layers local."""
    return int(np.clip(round(p_max * (h - 0.5) / 0.5), 1, p_max))
