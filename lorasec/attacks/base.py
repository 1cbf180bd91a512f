"""What every attack returns, and the two entry points the pipeline calls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lorasec.config import AttackConfig
from lorasec.data.text import TextDataset
from lorasec.errors import InputError
from lorasec.registry import Registry


@dataclass(frozen=True)
class PoisonedDataset:
    data: TextDataset  # what training sees
    poisoned: np.ndarray  # sorted row positions whose text or label the attack changed
    clean: TextDataset  # the untouched input


AttackFn = Callable[[TextDataset, AttackConfig, np.random.Generator], PoisonedDataset]
ATTACKS: Registry[AttackFn] = Registry("attack")

# Backdoor kinds also know how to trigger a test row; the registry of those lives beside ATTACKS.
TRIGGERS: dict[str, Callable[[str, AttackConfig, np.random.Generator], str]] = {}


def check_target(cfg: AttackConfig, n_classes: int) -> None:
    target = getattr(cfg, "target", None)
    if target is not None and target >= n_classes:
        raise InputError(
            f"attack.target: {target} is out of range for a {n_classes}-class dataset (0..{n_classes - 1})"
        )


def poison(train: TextDataset, cfg: AttackConfig, rng: np.random.Generator) -> PoisonedDataset:
    """Apply the configured attack to the training set."""
    check_target(cfg, train.n_classes)
    return ATTACKS.get(cfg.kind)(train, cfg, rng)


def triggered_test_set(test: TextDataset, cfg: AttackConfig, rng: np.random.Generator) -> TextDataset | None:
    """Test rows whose true label is not the target, with the trigger inserted; labels stay the TRUE labels.

    None for attacks without a trigger. ASR = share of these predicted as the target.
    """
    if cfg.kind not in TRIGGERS:
        return None
    check_target(cfg, test.n_classes)
    rows = np.flatnonzero(test.labels != cfg.target)
    if len(rows) == 0:
        raise InputError("attack.target: every test row already has the target label; nothing to trigger")
    sub = test.subset(rows)
    return sub.with_texts([TRIGGERS[cfg.kind](t, cfg, rng) for t in sub.texts])
