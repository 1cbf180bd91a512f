"""One readable training loop: an optimizer from lorasec.optimizers (AdamW by default), warmup and a schedule,
dynamic padding, length bucketing, gradient accumulation, fp32 or bf16 autocast.

No trainer object: `train(adapted, tokenizer, data, cfg, lr, seed)` runs the steps and returns a log.
accelerate places the model and batches on one device (the CPU, or one GPU when there is one). It is one process:
batches are not sharded across processes, so it does not train data-parallel on several devices.
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
from lorasec.data.batching import Encoded, batches, collate, encode
from lorasec.data.text import TextDataset
from lorasec.errors import Diverged, InputError
from lorasec.methods import Adapted
from lorasec.optimizers import OPTIMIZERS
from lorasec.seeds import torch_seeded

__all__ = ["Encoded", "TrainLog", "autocast", "batches", "collate", "encode", "lr_factor", "total_steps", "train",
           "train_encoded"]


@dataclass
class TrainLog:
    steps: int
    seconds: float
    lr: float
    truncated_rows: int
    tokens_seen: int
    padded_tokens: int  # tokens processed including padding: tokens_seen / padded_tokens = padding efficiency
    losses: list[float] = field(default_factory=list)  # mean training loss of each optimizer step
    lrs: list[float] = field(default_factory=list)  # learning rate each optimizer step used (warmup, schedule)


def total_steps(cfg: TrainConfig, n_rows: int) -> int:
    """Optimizer steps of the run: `steps`, or `epochs` passes over `n_rows` rows rounded up."""
    if cfg.steps is not None:
        return cfg.steps
    assert cfg.epochs is not None
    return max(1, math.ceil(cfg.epochs * n_rows / (cfg.batch_size * cfg.grad_accum)))


def lr_factor(step: int, steps: int, warmup: int, schedule: str) -> float:
    """Multiplier of the learning rate at optimizer step `step` (0-based) of `steps`.

    'constant': linear warmup over `warmup` steps reaching 1 at step warmup - 1, then 1 (paper 1's code has no
    schedule at all). 'linear' and 'cosine' decay to 0 at `steps` after the warmup, exactly as the Hugging Face
    Trainer's `get_linear_schedule_with_warmup` / `get_cosine_schedule_with_warmup`.
    """
    if schedule == "constant":
        return min(1.0, (step + 1) / warmup) if warmup else 1.0
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, steps - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    raise ValueError(f"unknown schedule {schedule!r}")


def train(adapted: Adapted, tokenizer: PreTrainedTokenizerBase, data: TextDataset, cfg: TrainConfig, lr: float,
          seed: int, progress: bool = True, label: str = "") -> TrainLog:
    """Fine-tune the classifier `adapted.model` in place on `data` for the configured number of steps."""
    enc = encode(tokenizer, data.texts, cfg.max_length)
    return train_encoded(adapted, enc, data.labels, tokenizer.pad_token_id, cfg, lr, seed, progress, label)


def train_encoded(adapted: Adapted, enc: Encoded, labels: np.ndarray | None, pad_id: int, cfg: TrainConfig,
                  lr: float, seed: int, progress: bool = True, label: str = "") -> TrainLog:
    """The loop itself, on token ids. `labels=None` trains a causal LM on the ids (next-token loss).

    Dropout draws from torch's generator seeded with `seed` inside a fork, so the run depends on `seed`
    alone and leaves the caller's generator untouched. A non-finite loss or gradient raises `Diverged` at
    that step, naming the cell `label`: the run stops there instead of training NaNs to the end.
    """
    with torch_seeded(seed):
        return _loop(adapted, enc, labels, pad_id, cfg, lr, np.random.default_rng(seed), progress, label)


def _diverged(label: str, step: int, steps: int, what: str, lr: float) -> Diverged:
    cell = f"cell {label!r}" if label else "training"
    return Diverged(f"train.lr: {cell} diverged at step {step} of {steps}: {what} (lr {lr:g}); "
                    "lower train.lr (or method.alpha)", step=step)


def _grads_finite(params: list[torch.nn.Parameter]) -> bool:
    grads = [p.grad for p in params if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())


def autocast(device: str, precision: str) -> torch.autocast:
    """The forward's precision: 'bf16' runs it under torch.autocast in bfloat16 (matmuls and their backward in
    bf16 on fp32 master weights; autograd replays each op's backward in the dtype its forward used).

    torch.autocast, not accelerate's `mixed_precision`: accelerate fixes that once per process, and a sweep
    worker runs fp32 and bf16 cells one after another."""
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")


def _checkpointing(model: torch.nn.Module, on: bool) -> None:
    """Switch activation checkpointing (non-reentrant) of a transformers model, or of the one a peft model wraps.

    Each layer keeps only its input in the forward pass and recomputes the rest in the backward pass, with the
    RNG state replayed (dropout draws the same masks), so losses and gradients are unchanged; only memory and
    time change."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise InputError(f"train.checkpointing: {type(base).__name__} does not support activation checkpointing")
    if on:
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.activation_checkpointing_disable()
        base.disable_input_require_grads()  # the hook enable() put on the input embeddings


def _loop(adapted: Adapted, enc: Encoded, labels: np.ndarray | None, pad_id: int, cfg: TrainConfig, lr: float,
          rng: np.random.Generator, progress: bool, label: str = "") -> TrainLog:
    acc = Accelerator(gradient_accumulation_steps=cfg.grad_accum)
    lengths = np.array([len(s) for s in enc.input_ids])
    steps = total_steps(cfg, len(lengths))
    model = adapted.model
    if cfg.checkpointing:
        _checkpointing(model, True)
    params = [p for n, p in model.named_parameters() if n in set(adapted.trainable)]
    opt = OPTIMIZERS.get(cfg.optimizer).build(params, lr, cfg.weight_decay)
    warm = int(cfg.warmup_ratio * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warm, cfg.schedule))
    model, opt, sched = acc.prepare(model, opt, sched)
    model.train()

    def micro_batches() -> Iterator[np.ndarray]:
        while True:
            yield from batches(lengths, cfg.batch_size, cfg.bucket, rng)

    log = TrainLog(steps=steps, seconds=0.0, lr=lr, truncated_rows=enc.truncated, tokens_seen=0, padded_tokens=0)
    stream = micro_batches()
    start = time.perf_counter()
    bar = tqdm(total=steps, desc="train", unit="step", disable=None if progress else True, leave=False)
    for step in range(1, steps + 1):
        step_loss = 0.0
        log.lrs.append(float(opt.param_groups[0]["lr"]))
        for _ in range(cfg.grad_accum):
            rows = next(stream)
            host = collate(enc, labels, rows, pad_id, lm_labels=labels is None)
            batch = {k: v.to(acc.device) for k, v in host.items()}
            log.tokens_seen += int(batch["attention_mask"].sum())
            log.padded_tokens += batch["attention_mask"].numel()
            with acc.accumulate(model):
                with autocast(acc.device.type, cfg.precision):
                    loss = model(**batch).loss
                value = loss.item()
                if not math.isfinite(value):
                    bar.close()
                    raise _diverged(label, step, steps, f"loss is {value}", lr)
                acc.backward(loss)
                if acc.sync_gradients and not _grads_finite(params):
                    bar.close()
                    raise _diverged(label, step, steps, "a gradient is not finite", lr)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            step_loss += value / cfg.grad_accum
        log.losses.append(step_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.3f}")
    bar.close()
    log.seconds = time.perf_counter() - start
    model.eval()
    adapted.model = acc.unwrap_model(model)
    if cfg.checkpointing:
        _checkpointing(adapted.model, False)
    return log
