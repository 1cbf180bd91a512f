"""One readable training loop: AdamW, linear warmup, dynamic padding, length bucketing, gradient accumulation.

No trainer object: `train(adapted, tokenizer, data, cfg, lr, seed)` runs the steps and returns a log.
accelerate places model and batches, so the same loop runs on CPU, one GPU or several.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from lorasec.config import TrainConfig
from lorasec.data.text import TextDataset
from lorasec.methods import Adapted


@dataclass
class Encoded:
    """Token ids per row, cut to max_length; `truncated` counts the rows that were cut."""

    input_ids: list[list[int]]
    truncated: int


@dataclass
class TrainLog:
    steps: int
    seconds: float
    lr: float
    truncated_rows: int
    tokens_seen: int
    padded_tokens: int  # tokens processed including padding: tokens_seen / padded_tokens = padding efficiency
    losses: list[float] = field(default_factory=list)  # mean training loss of each optimizer step


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
    seqs = [enc.input_ids[i] for i in rows]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, : len(s)] = torch.tensor(s)
        mask[j, : len(s)] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if labels is not None:
        out["labels"] = torch.as_tensor(labels[rows], dtype=torch.long)
    elif lm_labels:
        out["labels"] = ids.masked_fill(mask == 0, -100)
    return out


def total_steps(cfg: TrainConfig, n_rows: int) -> int:
    if cfg.steps is not None:
        return cfg.steps
    assert cfg.epochs is not None
    return max(1, math.ceil(cfg.epochs * n_rows / (cfg.batch_size * cfg.grad_accum)))


def train(adapted: Adapted, tokenizer: PreTrainedTokenizerBase, data: TextDataset, cfg: TrainConfig, lr: float,
          seed: int, accelerator: Accelerator | None = None, progress: bool = True) -> TrainLog:
    """Fine-tune the classifier `adapted.model` in place on `data` for the configured number of steps."""
    enc = encode(tokenizer, data.texts, cfg.max_length)
    return train_encoded(adapted, enc, data.labels, tokenizer.pad_token_id, cfg, lr, seed, accelerator, progress)


def train_encoded(adapted: Adapted, enc: Encoded, labels: np.ndarray | None, pad_id: int, cfg: TrainConfig,
                  lr: float, seed: int, accelerator: Accelerator | None = None, progress: bool = True) -> TrainLog:
    """The loop itself, on token ids. `labels=None` trains a causal LM on the ids (next-token loss)."""
    acc = accelerator or Accelerator(gradient_accumulation_steps=cfg.grad_accum)
    torch.manual_seed(seed)  # dropout masks
    rng = np.random.default_rng(seed)  # batch order
    lengths = np.array([len(s) for s in enc.input_ids])
    steps = total_steps(cfg, len(lengths))
    model = adapted.model
    params = [p for n, p in model.named_parameters() if n in set(adapted.trainable)]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    warm = int(cfg.warmup_ratio * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    model, opt, sched = acc.prepare(model, opt, sched)
    model.train()

    def micro_batches() -> Iterator[np.ndarray]:
        while True:
            yield from batches(lengths, cfg.batch_size, cfg.bucket, rng)

    log = TrainLog(steps=steps, seconds=0.0, lr=lr, truncated_rows=enc.truncated, tokens_seen=0, padded_tokens=0)
    stream = micro_batches()
    start = time.perf_counter()
    bar = tqdm(total=steps, desc="train", unit="step", disable=not progress, leave=False)
    for _ in range(steps):
        step_loss = 0.0
        for _ in range(cfg.grad_accum):
            rows = next(stream)
            host = collate(enc, labels, rows, pad_id, lm_labels=labels is None)
            batch = {k: v.to(acc.device) for k, v in host.items()}
            log.tokens_seen += int(batch["attention_mask"].sum())
            log.padded_tokens += batch["attention_mask"].numel()
            with acc.accumulate(model):
                loss = model(**batch).loss
                acc.backward(loss)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            step_loss += loss.item() / cfg.grad_accum
        log.losses.append(step_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.3f}")
    bar.close()
    log.seconds = time.perf_counter() - start
    model.eval()
    adapted.model = acc.unwrap_model(model)
    return log
