"""AdamW as torch implements it by default: paper 1's and paper 2's optimizer."""

from __future__ import annotations

from typing import Any

from lorasec.optimizers.base import OPTIMIZERS, Optimizer


def build(params: list[Any], lr: float, weight_decay: float) -> Any:
    import torch

    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


OPTIMIZERS.add("adamw", Optimizer("AdamW, torch's default implementation (what paper 1 and paper 2 use)", build))
