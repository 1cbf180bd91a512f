"""A word blocklist: the simplest data-sanitising defense, and the one that knows the trigger (an upper bound on
what filtering can do against a known trigger; useless against one it does not list).

Before training, rows containing any listed word (case-insensitive, as a whole word) are dropped; at evaluation,
with `inputs: true`, inputs containing one are rejected. Score: the number of listed words the text contains."""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
from pydantic import Field

from lorasec.config import Frozen
from lorasec.defenses.base import DEFENSES, Context, Defense, Kept, Rejected


class KeywordFilter(Frozen):
    kind: Literal["keyword"] = Field(description="drop training rows (and reject inputs) containing listed words")
    words: tuple[str, ...] = Field(min_length=1, description="words to look for (whole words, case-insensitive)")
    train: bool = Field(True, description="drop matching training rows before training")
    inputs: bool = Field(False, description="reject matching inputs at evaluation")


def scores(texts: tuple[str, ...] | list[str], words: tuple[str, ...]) -> np.ndarray:
    """Per text, how many of `words` occur in it as whole words (case-insensitive)."""
    patterns = [re.compile(rf"(?<!\w){re.escape(w)}(?!\w)", re.IGNORECASE) for w in words]
    return np.array([sum(bool(p.search(t)) for p in patterns) for t in texts], dtype=float)


def train_filter(data, cfg: KeywordFilter, ctx: Context) -> Kept:
    s = scores(data.texts, cfg.words)
    keep = np.flatnonzero(s == 0) if cfg.train else np.arange(len(s))
    return Kept(keep, s)


def input_filter(data, cfg: KeywordFilter, ctx: Context) -> Rejected:
    s = scores(data.texts, cfg.words)
    return Rejected(s, (s > 0) if cfg.inputs else np.zeros(len(s), dtype=bool))


DEFENSES.add("keyword", Defense(KeywordFilter, train_filter=train_filter, input_filter=input_filter))
