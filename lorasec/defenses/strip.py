"""STRIP (Gao et al., ACSAC 2019, arXiv 1902.06531; text form as in its STRIP-ViTA follow-up): an input filter that
rejects inputs whose prediction does not change when the input is perturbed.

Each input is copied `copies` times; in each copy a `share` of its words (at least one) is replaced by words drawn
uniformly from clean validation text. A triggered input keeps predicting the target whatever else changes, so the
mean entropy (nats) of its copies' predicted distributions is low. The bar is the `frr` quantile of the same mean
entropy over clean validation rows: inputs below it are rejected, so about `frr` of clean inputs are (the false
rejection rate it is set at). Score: minus the mean entropy (higher = more suspect).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from lorasec.config import Frozen
from lorasec.defenses.base import DEFENSES, Context, Defense, Rejected


class Strip(Frozen):
    kind: Literal["strip"] = Field(description="reject inputs whose prediction survives random word replacement")
    copies: int = Field(10, ge=2, le=256, description="perturbed copies per input (N)")
    share: float = Field(0.3, gt=0, le=1, description="share of an input's words replaced in each copy")
    frr: float = Field(0.01, gt=0, lt=0.5, description="false rejection rate on clean validation that sets the bar")
    val_rows: int = Field(500, ge=20, description="validation rows the bar is set on (the first ones)")


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of class probabilities (0 log 0 = 0)."""
    p = np.clip(np.asarray(probs, dtype=float), 0.0, 1.0)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(axis=-1)


def perturb(text: str, pool: Sequence[str], share: float, rng: np.random.Generator) -> str:
    """`text` with round(share x words) of its words (at least one) replaced by words drawn from `pool`."""
    words = text.split()
    if not words:
        return text
    k = min(len(words), max(1, round(share * len(words))))
    for at in rng.choice(len(words), size=k, replace=False):
        words[at] = pool[int(rng.integers(len(pool)))]
    return " ".join(words)


def mean_entropies(texts: Sequence[str], pool: Sequence[str], cfg: Strip, predict, rng: np.random.Generator
                   ) -> np.ndarray:
    """Per input, the mean entropy of the model's predictions over its `copies` perturbed copies."""
    copies = [perturb(t, pool, cfg.share, rng) for t in texts for _ in range(cfg.copies)]
    h = entropy(predict(copies)) if copies else np.zeros(0)
    return h.reshape(len(texts), cfg.copies).mean(axis=1)


def input_filter(data, cfg: Strip, ctx: Context) -> Rejected:
    val, predict = ctx.need("val", "defense"), ctx.need("predict", "defense")
    if "strip" not in ctx.memo:  # the pool and the bar, once per cell (the clean and triggered sets share them)
        pool = [w for t in val.texts for w in t.split()]
        val_h = mean_entropies(val.texts[: cfg.val_rows], pool, cfg, predict, ctx.rng)
        ctx.memo["strip"] = (pool, float(np.quantile(val_h, cfg.frr)))
    pool, bar = ctx.memo["strip"]
    h = mean_entropies(data.texts, pool, cfg, predict, ctx.rng)
    return Rejected(-h, h < bar, info={"entropy_bar": bar})


DEFENSES.add("strip", Defense(Strip, input_filter=input_filter))
