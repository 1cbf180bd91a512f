"""Spectral signatures (Tran, Li and Madry, NeurIPS 2018, arXiv 1811.00636): a training-set filter.

Per class (the labels the model would train on), the representations are centred and projected on their top right
singular vector; the score of a row is that projection squared. Poisoned rows of a class share a direction the
clean ones lack, so they score high: the top 1.5 x `epsilon` of each class (epsilon: an upper bound on the poisoned
share) are removed and the model is trained on the rest.

Representations (`representations`): the [CLS] vector the classification head reads, of the base model before
any training (`base`, cheap) or of a model first trained on the whole poisoned set with the cell's own method and
training settings (`poisoned`, the paper's setting: one extra training run per cell).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from lorasec.config import Frozen
from lorasec.defenses.base import DEFENSES, Context, Defense, Kept

Representations = Literal["base", "poisoned"]
REPRESENTATIONS = Field("base", description="representations of the base model, or of a model trained on the "
                        "poisoned set first")


class Spectral(Frozen):
    kind: Literal["spectral"] = Field(description="remove, per class, the rows with the largest top-singular-"
                                      "direction scores")
    epsilon: float = Field(0.05, gt=0, le=0.5, description="upper bound on the poisoned share; 1.5 x epsilon of "
                           "each class is removed")
    representations: Representations = REPRESENTATIONS


def class_scores(features: np.ndarray) -> np.ndarray:
    """(x - mean) . v squared per row, v the top right singular vector of the centred rows."""
    centred = features - features.mean(axis=0, keepdims=True)
    if len(features) < 2:
        return np.zeros(len(features))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return (centred @ vt[0]) ** 2


def spectral_filter(features: np.ndarray, labels: np.ndarray, epsilon: float) -> Kept:
    """Scores per row and the rows kept once each class's top round(1.5 epsilon n_c) scores are removed."""
    scores = np.zeros(len(labels))
    removed: list[np.ndarray] = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        s = class_scores(features[rows])
        scores[rows] = s
        k = min(len(rows), int(round(1.5 * epsilon * len(rows))))
        if k:
            removed.append(rows[np.argsort(-s, kind="stable")[:k]])
    return Kept.without(removed, len(labels), scores)


def train_filter(data, cfg: Spectral, ctx: Context) -> Kept:
    features = ctx.need("represent", "defense.representations")(data, cfg.representations)
    return spectral_filter(features, data.labels, cfg.epsilon)


DEFENSES.add("spectral", Defense(Spectral, train_filter=train_filter))
