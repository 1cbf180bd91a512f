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

from lorasec.config import DPConfig, TrainConfig
from lorasec.data.batching import Encoded, batches, collate, encode
from lorasec.data.text import TextDataset
from lorasec.errors import Diverged, FrozenTraining, InputError
from lorasec.methods import Adapted
from lorasec.optimizers import OPTIMIZERS
from lorasec.optimizers.dp import make_private, per_sample_lm_loss
from lorasec.seeds import torch_seeded

__all__ = ["Encoded", "FrozenTraining", "TrainLog", "autocast", "batches", "check_step_one", "collate", "encode",
           "lr_factor", "total_steps", "train", "train_encoded"]


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
    # method.dp only: the accountant's epsilon at delta, the noise, the clip, the sample rate, steps that drew no
    # row (their loss is stored as 0.0) and the mean share of rows whose gradient was clipped
    dp: dict | None = None


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
          seed: int, progress: bool = True, label: str = "", dp: DPConfig | None = None) -> TrainLog:
    """Fine-tune the classifier `adapted.model` in place on `data` for the configured number of steps."""
    enc = encode(tokenizer, data.texts, cfg.max_length)
    return train_encoded(adapted, enc, data.labels, tokenizer.pad_token_id, cfg, lr, seed, progress, label, dp)


def train_encoded(adapted: Adapted, enc: Encoded, labels: np.ndarray | None, pad_id: int, cfg: TrainConfig,
                  lr: float, seed: int, progress: bool = True, label: str = "", dp: DPConfig | None = None) -> TrainLog:
    """The loop itself, on token ids. `labels=None` trains a causal LM on the ids (next-token loss).

    Dropout draws from torch's generator seeded with `seed` inside a fork, so the run depends on `seed`
    alone and leaves the caller's generator untouched. A non-finite loss or gradient raises `Diverged` at
    that step, naming the cell `label`: the run stops there instead of training NaNs to the end.
    """
    with torch_seeded(seed):
        return _loop(adapted, enc, labels, pad_id, cfg, lr, np.random.default_rng(seed), progress, label, dp, seed)


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


def _dp_supported(cfg: TrainConfig) -> None:
    for bad, why in ((cfg.grad_accum != 1, "train.grad_accum must be 1 (Poisson sampling draws one batch a step)"),
                     (cfg.precision != "fp32", "train.precision must be fp32 (per-sample gradients in fp32)"),
                     (cfg.checkpointing, "train.checkpointing must be off (Opacus's hooks need the activations)")):
        if bad:
            raise InputError(f"method.dp: {why}")


def _snapshot(names: list[str], params: list[torch.nn.Parameter]) -> dict[str, tuple[torch.nn.Parameter, torch.Tensor]]:
    """The tensors that received a non-zero gradient, with a copy of their values before the update."""
    return {n: (p, p.detach().clone()) for n, p in zip(names, params, strict=True)
            if p.grad is not None and bool(p.grad.ne(0).any())}


def check_step_one(before: dict[str, tuple[torch.nn.Parameter, torch.Tensor]], label: str = "",
                   step: int = 1) -> None:
    """After the first update (step 1, or the first step of a warmup with a learning rate above 0): every tensor
    that had a gradient must have changed (LoRA's B included)."""
    cell = f"cell {label!r}: " if label else ""
    if not before:
        raise FrozenTraining(f"{cell}no trainable tensor received a gradient at step {step}: nothing would train")
    stale = [n for n, (p, old) in before.items() if torch.equal(p.detach(), old)]
    if stale:
        raise FrozenTraining(f"{cell}step {step} left {len(stale)} of {len(before)} tensors with a gradient "
                             f"unchanged (first: {stale[0]}): the optimizer does not update the model's parameters")


def _loop(adapted: Adapted, enc: Encoded, labels: np.ndarray | None, pad_id: int, cfg: TrainConfig, lr: float,
          rng: np.random.Generator, progress: bool, label: str = "", dp: DPConfig | None = None,
          seed: int = 0) -> TrainLog:
    acc = Accelerator(gradient_accumulation_steps=cfg.grad_accum)
    lengths = np.array([len(s) for s in enc.input_ids])
    steps = total_steps(cfg, len(lengths))
    model = adapted.model
    if cfg.checkpointing:
        _checkpointing(model, True)
    trainable = set(adapted.trainable)
    named = [(n, p) for n, p in model.named_parameters() if n in trainable]
    names, params = [n for n, _ in named], [p for _, p in named]
    warm = int(cfg.warmup_ratio * steps)

    def build(ps: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return OPTIMIZERS.get(cfg.optimizer).build(ps, lr, cfg.weight_decay)

    private = None
    if dp is None:
        opt = build(params)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warm, cfg.schedule))
        model, opt, sched = acc.prepare(model, opt, sched)
    else:  # the model goes to its device first, then is wrapped, then the optimizer is built on its tensors
        _dp_supported(cfg)
        model = acc.prepare(model)
        private = make_private(model, build, dp, len(lengths), cfg.batch_size, steps, seed ^ 0x5EED)
        model, opt = private.module, private.optimizer
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warm, cfg.schedule))
    model.train()

    def micro_batches() -> Iterator[np.ndarray]:
        while True:
            yield from batches(lengths, cfg.batch_size, cfg.bucket, rng)

    log = TrainLog(steps=steps, seconds=0.0, lr=lr, truncated_rows=enc.truncated, tokens_seen=0, padded_tokens=0)
    stream = micro_batches()
    poisson = dp is not None and dp.sampling == "poisson"
    checked = False
    start = time.perf_counter()
    bar = tqdm(total=steps, desc="train", unit="step", disable=None if progress else True, leave=False)
    for step in range(1, steps + 1):
        step_loss = 0.0
        log.lrs.append(float(opt.param_groups[0]["lr"]))
        for _ in range(cfg.grad_accum):
            rows = private.sample(rng) if poisson else next(stream)  # type: ignore[union-attr]
            if len(rows) == 0:  # a Poisson draw of no row: DP-SGD still takes the (noise-only) step
                private.empty_step()  # type: ignore[union-attr]
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                continue
            host = collate(enc, labels, rows, pad_id, lm_labels=labels is None)
            batch = {k: v.to(acc.device) for k, v in host.items()}
            if private is not None:  # one position row per sample: a shared (1, T) row gives position embeddings
                b, t = batch["input_ids"].shape  # a gradient of batch 1, not one per sample (same positions)
                batch["position_ids"] = torch.arange(t, device=acc.device).expand(b, t)
            log.tokens_seen += int(batch["attention_mask"].sum())
            log.padded_tokens += batch["attention_mask"].numel()
            with acc.accumulate(model):
                with autocast(acc.device.type, cfg.precision):
                    if private is not None and labels is None:  # each row's own mean, not a batch-wide one
                        loss = per_sample_lm_loss(model(input_ids=batch["input_ids"],
                                                        attention_mask=batch["attention_mask"],
                                                        position_ids=batch["position_ids"]).logits,
                                                  batch["labels"])
                    else:
                        loss = model(**batch).loss
                value = loss.item()
                if not math.isfinite(value):
                    bar.close()
                    raise _diverged(label, step, steps, f"loss is {value}", lr)
                acc.backward(loss)
                if acc.sync_gradients and not _grads_finite(params):
                    bar.close()
                    raise _diverged(label, step, steps, "a gradient is not finite", lr)
                # the first step with a learning rate above 0 (a linear warmup starts at 0) is checked
                first = acc.sync_gradients and not checked and float(opt.param_groups[0]["lr"]) > 0
                before = _snapshot(names, params) if first else None
                if private is not None:
                    private.record_clipping(len(rows))
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                if before is not None:
                    check_step_one(before, label, step)
                    checked = True
            step_loss += value / cfg.grad_accum
        if private is not None:
            private.steps_done += 1
        log.losses.append(step_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.3f}")
    bar.close()
    log.seconds = time.perf_counter() - start
    if private is not None:
        log.dp = private.summary()
        model = private.close()
    model.eval()
    adapted.model = acc.unwrap_model(model)
    if cfg.checkpointing:
        _checkpointing(adapted.model, False)
    return log
