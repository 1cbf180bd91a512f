"""Activation clustering (Chen et al., 2018, arXiv 1811.03728): a training-set filter.

Per class (the labels the model would train on), the representations are reduced to `dims` dimensions (PCA, or
FastICA as in the paper) and split by 2-means; poisoned rows relabelled into a class form a cluster of their own,
so the smaller cluster is flagged and removed when it holds at most `max_share` of the class (the paper's
relative-size rule). Score of a row: its distance to the larger cluster's centre minus its distance to the
smaller one's (positive = nearer the small cluster). Representations as in spectral signatures.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from lorasec.config import Frozen
from lorasec.defenses.base import DEFENSES, Context, Defense, Kept
from lorasec.defenses.spectral import REPRESENTATIONS, Representations


class ActivationClustering(Frozen):
    kind: Literal["activation_clustering"] = Field(description="per class, 2-means on reduced representations; "
                                                   "remove the small cluster")
    dims: int = Field(10, ge=1, le=1024, description="dimensions the representations are reduced to")
    reduce: Literal["pca", "ica"] = Field("pca", description="how they are reduced (the paper uses ICA)")
    max_share: float = Field(0.35, gt=0, lt=0.5, description="the smaller cluster is removed when it holds at most "
                             "this share of its class")
    representations: Representations = REPRESENTATIONS


def two_means(x: np.ndarray, seed: int) -> np.ndarray:
    """0/1 cluster of each row from scikit-learn's KMeans (k=2, 10 restarts)."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(x)


def reduced(x: np.ndarray, dims: int, how: str, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA, FastICA

    k = min(dims, x.shape[0], x.shape[1])
    if how == "ica":
        return FastICA(n_components=k, random_state=seed, whiten="unit-variance", max_iter=1000).fit_transform(x)
    return PCA(n_components=k, random_state=seed).fit_transform(x)


def cluster_filter(features: np.ndarray, labels: np.ndarray, cfg: ActivationClustering, seed: int) -> Kept:
    scores = np.zeros(len(labels))
    removed: list[np.ndarray] = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if len(rows) < 3:
            continue
        x = reduced(features[rows], cfg.dims, cfg.reduce, seed)
        parts = two_means(x, seed)
        small = int(np.sum(parts == 1) < np.sum(parts == 0))
        centre = {k: x[parts == k].mean(axis=0) for k in (0, 1)}
        scores[rows] = np.linalg.norm(x - centre[1 - small], axis=1) - np.linalg.norm(x - centre[small], axis=1)
        if np.mean(parts == small) <= cfg.max_share:
            removed.append(rows[parts == small])
    return Kept.without(removed, len(labels), scores)


def train_filter(data, cfg: ActivationClustering, ctx: Context) -> Kept:
    features = ctx.need("represent", "defense.representations")(data, cfg.representations)
    return cluster_filter(features, data.labels, cfg, int(ctx.rng.integers(2**31)))


DEFENSES.add("activation_clustering", Defense(ActivationClustering, train_filter=train_filter))
