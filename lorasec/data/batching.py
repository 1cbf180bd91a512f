"""Token ids and batches: encoding with counted truncation, epoch batching with length buckets, padding.

Shared by training, evaluation, sequence scoring and generation, so every path pads the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase


@dataclass
class Encoded:
    """Token ids per row, cut to max_length; `truncated` counts the rows that were cut."""

    input_ids: list[list[int]]
    truncated: int


def encode(tokenizer: PreTrainedTokenizerBase, texts: tuple[str, ...] | list[str], max_length: int) -> Encoded:
    """Token ids of each text with the tokenizer's special tokens, cut to `max_length` and counted when cut."""
    full = tokenizer(list(texts), truncation=False, add_special_tokens=True, verbose=False)["input_ids"]
    special = set(tokenizer.all_special_ids)

    def cut(ids: list[int]) -> list[int]:
        if len(ids) <= max_length:
            return ids
        # a closing special token ([SEP]) stays closing, as the tokenizer's own truncation would keep it
        return ids[: max_length - 1] + ids[-1:] if ids[-1] in special else ids[:max_length]

    return Encoded([cut(ids) for ids in full], sum(len(ids) > max_length for ids in full))


def batches(lengths: np.ndarray, batch_size: int, bucket: bool, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One epoch of row-index batches in random order; with `bucket`, rows of similar length share a batch.

    Bucketing sorts each chunk of 50 batches by length, cuts it into batches and shuffles the batches,
    so padding shrinks while the order stays random at the batch level.
    """
    order = rng.permutation(len(lengths))
    chunk = batch_size * 50 if bucket else len(order)
    out = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        if bucket:
            part = part[np.argsort(lengths[part], kind="stable")]
        out.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    for i in rng.permutation(len(out)):
        yield out[i]


def collate(enc: Encoded, labels: np.ndarray | None, rows: np.ndarray, pad_id: int,
            lm_labels: bool = False) -> dict[str, torch.Tensor]:
    """Pad the rows (right) to the longest one in the batch (dynamic padding).

    `labels` gives class labels; `lm_labels` makes causal-LM labels instead (the ids, -100 on padding).
    """
    out = pad([enc.input_ids[i] for i in rows], pad_id, "right")
    ids, mask = out["input_ids"], out["attention_mask"]
    if labels is not None:
        out["labels"] = torch.as_tensor(labels[rows], dtype=torch.long)
    elif lm_labels:
        out["labels"] = ids.masked_fill(mask == 0, -100)
    return out




def pad(seqs: Sequence[Sequence[int]], pad_id: int, side: Literal["right", "left"]) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence: right for training and scoring, left for batched generation."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, s in enumerate(seqs):
        if len(s):
            at = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
            ids[j, at] = torch.tensor(list(s))
            mask[j, at] = 1
    return {"input_ids": ids, "attention_mask": mask}


def rows_per_batch(seq_len: int, width: int, cap: int, budget_bytes: int = 512 << 20) -> int:
    """How many rows of `seq_len` tokens fit a batch whose float32 (rows, seq_len, width) output stays within
    `budget_bytes` (width: the vocabulary for a causal LM's logits), at most `cap` and at least one.

    Scoring and generation size their batches with it, so a 49k-token vocabulary at 1,000 tokens does not
    take gigabytes where a batch of short canaries takes a few megabytes.
    """
    return max(1, min(cap, budget_bytes // max(1, seq_len * width * 4)))
