"""Planted secrets and record duplication for the memorization arm.

Canaries follow the Secret Sharer (Carlini et al., 2019): a template such as "the secret number is {secret}"
filled with a random secret from a space of 10**digits and inserted `count` times into the training set.
Duplication repeats chosen member records k times (paper 2's duplication axis).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

from lorasec.config import CanaryConfig, DuplicationConfig
from lorasec.data.corpora import Record


@dataclass(frozen=True)
class Canary:
    secret: int  # index in the candidate space 0 .. 10**digits - 1
    count: int  # copies in the training set
    text: str


def candidate_text(cfg: CanaryConfig, secret: int) -> str:
    return cfg.template.replace("{secret}", f"{secret:0{cfg.digits}d}")


def make_canaries(cfg: CanaryConfig, rng: np.random.Generator) -> list[Canary]:
    """One canary per count, with distinct random secrets."""
    space = 10**cfg.digits
    secrets = rng.choice(space, size=len(cfg.counts), replace=False)
    return [Canary(int(s), c, candidate_text(cfg, int(s))) for s, c in zip(secrets, cfg.counts, strict=True)]


def canary_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a canary or candidate, identically for training and for scoring (no special tokens)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def duplication_counts(members: Sequence[Record], cfg: DuplicationConfig, rng: np.random.Generator) -> dict[str, int]:
    """record id -> copies in training: `per_count` distinct members for each count > 1, the rest once."""
    counts = {r.id: 1 for r in members}
    order = rng.permutation(len(members))
    at = 0
    for c in sorted(set(cfg.counts)):
        if c == 1:
            continue
        for i in order[at : at + cfg.per_count]:
            counts[members[i].id] = c
        at += cfg.per_count
    return counts


def training_sequences(members: Sequence[Record], dup: dict[str, int], canaries: Sequence[Canary],
                       tokenizer: PreTrainedTokenizerBase) -> tuple[list[list[int]], list[str]]:
    """Token-id sequences of the training set and, per sequence, what it is (a record id or `canary:<secret>`)."""
    seqs: list[list[int]] = []
    source: list[str] = []
    for r in members:
        seqs += [list(r.token_ids)] * dup[r.id]
        source += [r.id] * dup[r.id]
    for c in canaries:
        seqs += [canary_ids(tokenizer, c.text)] * c.count
        source += [f"canary:{c.secret}"] * c.count
    return seqs, source


def audit_canaries(n: int, tokens: int, tokenizer: PreTrainedTokenizerBase,
                   rng: np.random.Generator) -> tuple[list[list[int]], np.ndarray]:
    """`n` random-token sequences (ordinary ids only, uniformly) and one fair coin flip each: which go into the
    training set (Steinke et al.'s one-run audit). Both come from `rng` alone, so the flips recompute."""
    special = set(tokenizer.all_special_ids)
    ordinary = np.array([i for i in range(len(tokenizer)) if i not in special])
    ids = rng.choice(ordinary, size=(n, tokens))
    included = rng.random(n) < 0.5
    return [list(map(int, row)) for row in ids], included
