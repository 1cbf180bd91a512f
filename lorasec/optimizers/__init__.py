"""Optimizers: name -> how to build one over the trainable parameters (a registry, one file per optimizer).

`train.optimizer` names an entry; the config is checked against this registry when it is validated
(`lorasec.tasks.parse_config`), so importing this package imports no torch: each builder imports it when called.

Adding one: a module here that calls `OPTIMIZERS.add(name, Optimizer(...))`, and one import line in this file.
"""

from __future__ import annotations

from lorasec.optimizers import adamw, adamw_fused  # noqa: F401  (register)
from lorasec.optimizers.base import OPTIMIZERS, Optimizer

__all__ = ["OPTIMIZERS", "Optimizer"]
