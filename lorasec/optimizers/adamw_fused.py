"""AdamW with torch's fused kernel (`fused=True`, one kernel over all parameters; CPU and CUDA in torch 2.x).

The same update rule as `adamw`; the fused kernel orders its float operations differently, so numbers agree to
float rounding, not bit for bit, and it is a key of its own."""

from __future__ import annotations

from typing import Any

from lorasec.optimizers.base import OPTIMIZERS, Optimizer


def build(params: list[Any], lr: float, weight_decay: float) -> Any:
    import torch

    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)


OPTIMIZERS.add("adamw_fused", Optimizer("AdamW with torch's fused kernel (fused=True)", build))
