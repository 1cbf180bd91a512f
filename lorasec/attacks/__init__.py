"""Training-time attacks: name -> function(train set, config, rng) -> PoisonedDataset.

Each attack records exactly which training rows it changed, so every result can be audited.
"""

from __future__ import annotations

from lorasec.attacks import backdoor, label_flip  # noqa: F401  (register)
from lorasec.attacks.base import ATTACKS, PoisonedDataset, poison, triggered_test_set

__all__ = ["ATTACKS", "PoisonedDataset", "poison", "triggered_test_set"]
