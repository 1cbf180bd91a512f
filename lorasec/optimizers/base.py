"""The optimizers registry and what its entries are (see lorasec.optimizers)."""


from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lorasec.registry import Registry


@dataclass(frozen=True)
class Optimizer:
    description: str
    # (trainable parameters, lr, weight decay) -> a torch.optim.Optimizer
    build: Callable[[list[Any], float, float], Any]


OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")
