"""Untargeted poisoning (paper 1, section 5.1): each label flipped with probability p to another class."""

from __future__ import annotations

import numpy as np

from lorasec.attacks.base import ATTACKS, PoisonedDataset
from lorasec.config import LabelFlip, NoAttack
from lorasec.data.text import TextDataset


@ATTACKS.register("none")
def no_attack(ds: TextDataset, cfg: NoAttack, rng: np.random.Generator) -> PoisonedDataset:
    return PoisonedDataset(ds, np.zeros(0, dtype=np.int64), ds)


@ATTACKS.register("label_flip")
def label_flip(ds: TextDataset, cfg: LabelFlip, rng: np.random.Generator) -> PoisonedDataset:
    flip = rng.random(len(ds)) < cfg.rate
    labels = ds.labels.copy()
    # adding 1..k-1 modulo k never lands on the same class, and is uniform over the others
    labels[flip] = (labels[flip] + rng.integers(1, ds.n_classes, flip.sum())) % ds.n_classes
    return PoisonedDataset(ds.with_labels(labels), np.flatnonzero(flip), ds)
