"""Membership-inference scores and their ROC metrics.

Every score here is oriented so that HIGHER = MORE LIKELY A MEMBER (a training record). mimir keeps
some scores the other way round and flips signs inside `get_roc_metrics`; we flip nothing later, so a
stored score can be fed to `sklearn.metrics.roc_auc_score(is_member, score)` as it is.

Inputs are per-token log-probabilities of the actual tokens, log p(x_t | x_<t), natural log, shape
(T,). Positive values are refused: they almost always mean NLLs were passed by mistake, which would
silently invert the attack.

Scores (one per record):
- LOSS (Yeom et al., 2018): mean token log-prob = -mean NLL.
- Reference (Carlini et al., 2021, "Extracting Training Data from Large Language Models", Sec. 5.2):
  mean NLL under a reference model minus mean NLL under the target. Carlini et al. rank by the
  ratio of the two log-perplexities; we take the difference, as mimir's ReferenceAttack does.
- zlib (Carlini et al., 2021, Sec. 5.2): -(mean NLL) / zlib entropy, the latter the byte length of
  zlib.compress(text.encode("utf-8")) at zlib's default level (6), as in mimir (the paper says bits;
  a factor of 8 changes no ranking).
- Min-K% Prob (Shi et al., 2024, "Detecting Pretraining Data from LLMs", arXiv 2310.16789): mean of
  the lowest k% token log-probs.
- Min-K%++ (Zhang et al., 2024, arXiv 2404.02936): per token (log p(x_t) - mu_t) / sigma_t with
  mu_t = E_{z~p(.|x_<t)}[log p(z)], sigma_t^2 = Var_{z~p(.|x_<t)}[log p(z)]; mean of the lowest k%.

Min-K% and Min-K%++ average the floor(k * T) lowest values, at least one, as mimir does.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.stats import rankdata
from sklearn.metrics import auc as sk_auc
from sklearn.metrics import roc_curve

__all__ = [
    "RocMetrics",
    "TokenStats",
    "bootstrap_auc",
    "loss_score",
    "mia_auc",
    "min_k_plus_plus_score",
    "min_k_score",
    "reference_score",
    "roc_metrics",
    "token_stats",
    "tpr_at_fpr",
    "zlib_entropy",
    "zlib_score",
]


def _finite_1d(name: str, values: ArrayLike) -> np.ndarray:
    """float64 (n,) array with n >= 1 and no NaN/inf, or a ValueError naming the input."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array (got shape {arr.shape})")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} contains {int(bad.sum())} NaN/inf value(s) of {arr.size}; refusing to drop them")
    return arr


def _logprobs(name: str, values: ArrayLike) -> np.ndarray:
    arr = _finite_1d(name, values)
    if (arr > 0).any():
        raise ValueError(f"{name} must be log-probabilities (<= 0); max is {arr.max():.4g}: were NLLs passed?")
    return arr


def _n_lowest(n_tokens: int, k: float) -> int:
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1] (got {k})")
    # floor(k * T) as documented; rounding first so 0.29 * 100 = 28.999999999999996 counts 29 tokens, not 28
    return max(1, math.floor(round(n_tokens * k, 9)))


def loss_score(token_logprobs: ArrayLike) -> float:
    """LOSS attack (Yeom et al., 2018): mean log p(x_t | x_<t) = -(mean NLL). Higher = member."""
    return float(_logprobs("token_logprobs", token_logprobs).mean())


def reference_score(target_logprobs: ArrayLike, reference_logprobs: ArrayLike) -> float:
    """Reference-model attack (Carlini et al., 2021, Sec. 5.2): ref_nll - target_nll. Higher = member.

    Each NLL is the mean over that model's own tokens, so the two arrays may differ in length when the
    reference model uses another tokenizer. A record the target finds much easier than a model that
    never saw it is likely a member.
    """
    target_nll = -_logprobs("target_logprobs", target_logprobs).mean()
    ref_nll = -_logprobs("reference_logprobs", reference_logprobs).mean()
    return float(ref_nll - target_nll)


def zlib_entropy(text: str) -> int:
    """Byte length of zlib.compress(text.encode("utf-8")) at the default level: Carlini et al.'s zlib entropy."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_score(token_logprobs: ArrayLike, text: str) -> float:
    """zlib attack (Carlini et al., 2021, Sec. 5.2): -(mean NLL) / zlib_entropy(text). Higher = member.

    The paper ranks by log-perplexity / zlib entropy (low = suspicious); this is its negation, with
    log-perplexity = mean token NLL in nats, as mimir's ZLIBAttack computes it.
    """
    mean_nll = -_logprobs("token_logprobs", token_logprobs).mean()
    return float(-mean_nll / zlib_entropy(text))


def min_k_score(token_logprobs: ArrayLike, k: float = 0.2) -> float:
    """Min-K% Prob (Shi et al., 2024): mean of the floor(k*T) (>= 1) lowest token log-probs. Higher = member."""
    lp = _logprobs("token_logprobs", token_logprobs)
    return float(np.sort(lp)[: _n_lowest(lp.size, k)].mean())


def min_k_plus_plus_score(token_logprobs: ArrayLike, mu: ArrayLike, sigma: ArrayLike, k: float = 0.2) -> float:
    """Min-K%++ (Zhang et al., 2024): mean of the lowest k% of (log p(x_t) - mu_t) / sigma_t. Higher = member.

    mu_t and sigma_t are the mean and standard deviation of log p(z | x_<t) over z ~ p(. | x_<t): a
    token is suspicious when it is a local mode of the next-token distribution, not merely likely.
    Get all three arrays from `token_stats`. sigma_t must be > 0: a point-mass next-token
    distribution leaves the z-score undefined, and it is refused rather than turned into inf.
    """
    lp = _logprobs("token_logprobs", token_logprobs)
    mu_ = _finite_1d("mu", mu)
    sigma_ = _finite_1d("sigma", sigma)
    if not lp.shape == mu_.shape == sigma_.shape:
        raise ValueError(f"token_logprobs, mu, sigma must have one shape (got {lp.shape}, {mu_.shape}, {sigma_.shape})")
    if (sigma_ <= 0).any():
        raise ValueError(f"sigma must be > 0 at every position; {int((sigma_ <= 0).sum())} position(s) are not")
    z = (lp - mu_) / sigma_
    return float(np.sort(z)[: _n_lowest(z.size, k)].mean())


@dataclass(frozen=True)
class TokenStats:
    """Per-position statistics of one sequence, each float64 of shape (T,)."""

    logprobs: np.ndarray
    """log p(x_t | x_<t) of the actual tokens."""
    mu: np.ndarray
    """E_{z~p(.|x_<t)}[log p(z | x_<t)] (minus the entropy)."""
    sigma: np.ndarray
    """sqrt(Var_{z~p(.|x_<t)}[log p(z | x_<t)])."""


def token_stats(logits: torch.Tensor, target_ids: torch.Tensor) -> TokenStats:
    """Token log-probs and Min-K%++'s mu/sigma from one sequence's logits.

    logits: (T, V), row t the model's prediction for target_ids[t] (shift already done by the caller:
    for a causal LM, logits[:-1] against input_ids[1:]). target_ids: (T,) integer token ids.

    Computed in float64 with the variance taken as E[(log p - mu)^2] rather than E[log p^2] - mu^2:
    on confident (fine-tuned) models the latter cancels catastrophically in float32 and can even go
    negative. Vocabulary entries with p = 0 (e.g. -inf masked logits) contribute 0, not NaN.
    """
    if logits.ndim != 2 or target_ids.ndim != 1 or logits.shape[0] != target_ids.shape[0]:
        raise ValueError(
            f"need logits (T, V) and target_ids (T,); got {tuple(logits.shape)} and {tuple(target_ids.shape)}"
        )
    with torch.no_grad():
        logp = torch.log_softmax(logits.detach().to(torch.float64), dim=-1)  # (T, V)
        p = logp.exp()
        live = p > 0
        token_lp = logp.gather(-1, target_ids.long().unsqueeze(-1)).squeeze(-1)  # (T,)
        mu = torch.where(live, p * logp, 0.0).sum(-1)  # (T,)
        var = torch.where(live, p * (logp - mu.unsqueeze(-1)) ** 2, 0.0).sum(-1)  # (T,)
    return TokenStats(token_lp.cpu().numpy(), mu.cpu().numpy(), var.sqrt().cpu().numpy())


@dataclass(frozen=True)
class RocMetrics:
    """ROC summary of one attack: members are positives, higher score = predicted member."""

    auc: float
    """ROC AUC on the given scores (sklearn roc_curve + auc)."""
    auc_mean: float
    """Mean AUC over the bootstrap resamples."""
    auc_std: float
    """Standard deviation (ddof=0, as numpy/mimir) of the bootstrap AUCs."""
    tpr_at_fpr: dict[float, float]
    """target FPR -> TPR of the operating point with the largest FPR that is <= the target."""
    n_members: int
    n_nonmembers: int
    n_bootstrap: int
    seed: int


def _labels_scores(member_scores: ArrayLike, nonmember_scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    mem = _finite_1d("member_scores", member_scores)
    non = _finite_1d("nonmember_scores", nonmember_scores)
    y = np.concatenate([np.ones(mem.size), np.zeros(non.size)])
    return y, np.concatenate([mem, non])


def mia_auc(member_scores: ArrayLike, nonmember_scores: ArrayLike) -> float:
    """ROC AUC with members as positives: sklearn roc_curve then trapezoidal auc (ties count 1/2)."""
    y, s = _labels_scores(member_scores, nonmember_scores)
    fpr, tpr, _ = roc_curve(y, s)
    return float(sk_auc(fpr, tpr))


def tpr_at_fpr(member_scores: ArrayLike, nonmember_scores: ArrayLike, fprs: Sequence[float]) -> dict[float, float]:
    """TPR at each target FPR: the operating point "member iff score >= threshold" with the largest FPR <= target.

    Uses sklearn roc_curve with drop_intermediate=False: with the default, collinear points are
    dropped and the best point under a target can vanish. "<=" where mimir uses "<"; at FPR 0 the
    answer is the TPR of the strictest threshold that flags no non-member (possibly 0).
    """
    for f in fprs:
        if not 0 < f <= 1:
            raise ValueError(f"each target FPR must be in (0, 1] (got {f})")
    y, s = _labels_scores(member_scores, nonmember_scores)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    # fpr is non-decreasing and starts at 0 (threshold +inf), so the last index with fpr <= f exists.
    return {float(f): float(tpr[np.searchsorted(fpr, f, side="right") - 1]) for f in fprs}


def _rank_auc(mem: np.ndarray, non: np.ndarray) -> float:
    """Mann-Whitney AUC: P(member > nonmember) + P(tie) / 2, equal to roc_auc_score, O(n log n)."""
    ranks = rankdata(np.concatenate([mem, non]))  # average ranks for ties
    u = ranks[: mem.size].sum() - mem.size * (mem.size + 1) / 2
    return float(u / (mem.size * non.size))


def bootstrap_auc(member_scores: ArrayLike, nonmember_scores: ArrayLike, n_bootstrap: int, seed: int) -> np.ndarray:
    """AUC of `n_bootstrap` stratified resamples, shape (n_bootstrap,).

    Replicate b draws, from np.random.default_rng(seed), first rng.integers(0, n_mem, n_mem) then
    rng.integers(0, n_non, n_non): members and non-members are resampled with replacement
    separately. mimir resamples the pooled (score, label) pairs (scipy.stats.bootstrap, paired=True);
    stratifying keeps both classes in every replicate, so no replicate has an undefined AUC.
    """
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be >= 2 for a standard deviation (got {n_bootstrap})")
    mem = _finite_1d("member_scores", member_scores)
    non = _finite_1d("nonmember_scores", nonmember_scores)
    rng = np.random.default_rng(seed)
    out = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        mi = rng.integers(0, mem.size, mem.size)
        ni = rng.integers(0, non.size, non.size)
        out[b] = _rank_auc(mem[mi], non[ni])
    return out


def roc_metrics(
    member_scores: ArrayLike,
    nonmember_scores: ArrayLike,
    fprs: Sequence[float] = (0.001, 0.01, 0.1),
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> RocMetrics:
    """AUC, bootstrap AUC mean +- std (as mimir's get_roc_metrics, 1000 resamples) and TPR at low FPRs.

    Scores must be oriented higher = member. NaN or inf anywhere raises ValueError: mimir drops NaNs
    silently, which changes the member/non-member counts behind the reader's back.
    """
    aucs = bootstrap_auc(member_scores, nonmember_scores, n_bootstrap, seed)
    n_mem = np.asarray(member_scores).size
    n_non = np.asarray(nonmember_scores).size
    return RocMetrics(
        auc=mia_auc(member_scores, nonmember_scores),
        auc_mean=float(aucs.mean()),
        auc_std=float(aucs.std()),
        tpr_at_fpr=tpr_at_fpr(member_scores, nonmember_scores, fprs),
        n_members=int(n_mem),
        n_nonmembers=int(n_non),
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
