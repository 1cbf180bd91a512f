"""DP-SGD around any registered optimizer, with Opacus (issue 34): what `method.dp` turns on.

    private = make_private(model, optimizer, cfg, n_rows, batch_size, steps, seed)
    rows = private.sample(rng)          # Poisson: every row in with probability q = batch_size / n_rows
    loss = per_sample_mean(...)         # a mean over rows of each row's own loss
    loss.backward(); private.optimizer.step()   # clip each row's gradient, sum, add noise, divide by q * n

Opacus computes per-sample gradients with hooks on the trainable layers (GradSampleModule; layers it has no rule
for, such as an RMSNorm or GPT-2's Conv1D, go through torch.func) and its DPOptimizer clips, noises and scales
them before the wrapped optimizer's own update; the RDP accountant turns (noise, q, steps) into epsilon at delta.

Order matters (Opacus issue 820: a model moved to its device after the optimizer was built trains nothing):
here the model is already where it trains when it is wrapped, the optimizer is built on the wrapped model's own
parameter tensors, and the training loop checks after step 1 that every tensor with a gradient changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lorasec.config import DPConfig
from lorasec.errors import FrozenTraining, InputError

# RDP orders: Opacus's defaults (1.1 ... 63) and larger ones, which the small epsilons of heavy noise need (with the
# defaults alone Opacus warns that the largest order was optimal, i.e. its epsilon is looser than it needs to be)
ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + list(range(64, 256, 4)) + [
    256, 320, 384, 512, 768, 1024, 2048, 4096]


def check_rows(cfg: DPConfig, n_rows: int, batch_size: int) -> float:
    """The sample rate q = batch_size / n_rows, after refusing a delta the training set makes meaningless."""
    if cfg.delta >= 1.0 / n_rows:
        raise InputError(f"method.dp.delta: {cfg.delta:g} must be below 1 / training rows = 1/{n_rows} "
                         f"= {1.0 / n_rows:.3g} (a larger delta lets a mechanism publish a row outright)")
    if batch_size >= n_rows:
        raise InputError(f"train.batch_size: {batch_size} must be below the {n_rows} training rows under method.dp "
                         "(Poisson sampling draws each row with probability batch_size / rows)")
    return batch_size / n_rows


def noise_for(cfg: DPConfig, sample_rate: float, steps: int) -> float:
    """The noise multiplier: given, or the smallest one Opacus finds that reaches target_epsilon in `steps`."""
    if cfg.noise_multiplier is not None:
        return cfg.noise_multiplier
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return float(get_noise_multiplier(target_epsilon=cfg.target_epsilon, target_delta=cfg.delta,
                                          sample_rate=sample_rate, steps=steps, accountant="rdp",
                                          alphas=ALPHAS))
    except ValueError as e:
        raise InputError(f"method.dp.target_epsilon: {cfg.target_epsilon:g} is out of reach in {steps} steps at "
                         f"sample rate {sample_rate:.3g} and delta {cfg.delta:g} ({e}); raise it or train "
                         "fewer steps") from None


@dataclass
class Private:
    """A model wrapped for per-sample gradients, its DP optimizer and what the accountant needs."""

    module: Any  # opacus GradSampleModule around the model
    optimizer: Any  # opacus DPOptimizer around the registered optimizer
    cfg: DPConfig
    noise_multiplier: float
    sample_rate: float
    n_rows: int
    steps_done: int = 0
    empty_steps: int = 0  # Poisson steps that drew no row: noise only, as DP-SGD requires
    clipped: list[float] = field(default_factory=list)  # per step: share of rows whose gradient was clipped

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """This step's rows: each row independently with probability q (may be empty)."""
        return np.flatnonzero(rng.random(self.n_rows) < self.sample_rate)

    def empty_step(self) -> None:
        """A step that drew no row: zero per-sample gradients, so the update is the noise alone."""
        import torch

        for p in self.optimizer.params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        self.empty_steps += 1

    def record_clipping(self, rows: int) -> None:
        """Before optimizer.step(): check that every tensor has one gradient per row of the batch (a tensor fed a
        shared input, such as a (1, T) row of position ids, would get one for the whole batch and void the
        guarantee) and record the share of rows whose gradient norm exceeds the clip."""
        import torch

        samples = [getattr(p, "grad_sample", None) for p in self.optimizer.params]
        missing = [tuple(p.shape) for p, g in zip(self.optimizer.params, samples, strict=True) if g is None]
        if missing:
            raise FrozenTraining(f"method.dp: the optimizer holds {len(missing)} of {len(samples)} tensors that got no "
                                 f"gradient (first of shape {missing[0]}): it does not update the model's parameters")
        wrong = [i for i, g in enumerate(samples) if len(g) != rows]
        if wrong:
            i = wrong[0]
            raise RuntimeError(f"method.dp: a trainable tensor of shape {tuple(self.optimizer.params[i].shape)} got "
                               f"{len(samples[i])} per-sample gradients for a batch of {rows} rows")
        norms = torch.stack([g.reshape(len(g), -1).norm(2, dim=-1) for g in samples], dim=1).norm(2, dim=1)
        self.clipped.append(float((norms > self.cfg.max_grad_norm).float().mean()))

    def epsilon(self) -> float | None:
        """The RDP accountant's epsilon at delta after the steps taken; None where there is no claim to make
        (sampling 'batches', or noise 0: epsilon is infinite)."""
        if self.cfg.sampling != "poisson" or self.noise_multiplier == 0 or self.steps_done == 0:
            return None
        from opacus.accountants import RDPAccountant

        acc = RDPAccountant()
        acc.history = [(self.noise_multiplier, self.sample_rate, self.steps_done)]
        return float(acc.get_epsilon(self.cfg.delta, alphas=ALPHAS))

    def summary(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon(), "delta": self.cfg.delta, "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": self.cfg.max_grad_norm, "sample_rate": self.sample_rate,
                "sampling": self.cfg.sampling, "steps": self.steps_done, "empty_steps": self.empty_steps,
                "accountant": "rdp (orders 1.1 ... 4096)",
                "clipped_share": float(np.mean(self.clipped)) if self.clipped else None}

    def close(self) -> Any:
        """Remove the hooks and per-sample buffers; the plain model back."""
        self.module._close()
        for p in self.module._module.parameters():
            for name in ("grad_sample", "summed_grad"):
                if hasattr(p, name):
                    delattr(p, name)
        return self.module._module


def make_private(model: Any, build_optimizer: Any, cfg: DPConfig, n_rows: int, batch_size: int, steps: int,
                 seed: int) -> Private:
    """Wrap `model` (already on its device) for per-sample gradients and build the DP optimizer over the wrapped
    model's trainable tensors with `build_optimizer(params)`. Noise draws come from a generator seeded by `seed`."""
    import torch
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    q = check_rows(cfg, n_rows, batch_size)
    sigma = noise_for(cfg, q, steps)
    module = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
    params = [p for p in module.parameters() if p.requires_grad]
    gen = torch.Generator(device=params[0].device).manual_seed(seed)
    opt = DPOptimizer(build_optimizer(params), noise_multiplier=sigma, max_grad_norm=cfg.max_grad_norm,
                      expected_batch_size=batch_size, loss_reduction="mean", generator=gen)
    return Private(module, opt, cfg, sigma, q, n_rows)


def per_sample_lm_loss(logits: Any, labels: Any) -> Any:
    """Next-token loss as a mean over rows of each row's mean over its own tokens, so a row's gradient depends on
    that row alone (the transformers loss averages over all tokens of the batch, which mixes rows' lengths in)."""
    import torch

    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    tok = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                                            shift_labels.reshape(-1), ignore_index=-100, reduction="none")
    tok = tok.view(shift_labels.shape)
    valid = (shift_labels != -100).float()
    return ((tok * valid).sum(1) / valid.sum(1).clamp(min=1)).mean()
