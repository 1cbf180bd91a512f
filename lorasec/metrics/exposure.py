"""Secret Sharer exposure (Carlini et al., 2019, "The Secret Sharer", arXiv 1802.08232).

A canary s[r] (e.g. "the secret number is 123456") is inserted into the training data; the candidate
space R holds every secret of the same format (10^6 six-digit numbers). Scores are oriented so that
LOWER = MORE LIKELY under the model (negative log-likelihood, log-perplexity), as in the paper.

    rank(s[r])    = position of the canary when all of R is sorted by score, 1 = most likely   (Def. 3)
    exposure(s[r]) = log2 |R| - log2 rank(s[r])                                                (Def. 4)

so 0 <= exposure <= log2 |R|. When R is too large to enumerate, Section 4.3 fits a skew-normal
distribution to a sample of candidate scores and reads exposure off its CDF:
exposure ~= -log2 Pr_{r in R}[score(r) <= score(canary)].

Ties: a canary's rank is 1 + the number of candidates whose score is STRICTLY lower. Candidates that
tie with the canary do not push it down (the optimistic rank, hence the largest exposure among the
tied positions); `ExposureResult.n_ties` records how many there were so a reader can see when it matters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

__all__ = [
    "ExposureResult",
    "SkewNormExposure",
    "exact_rank",
    "exposure_from_rank",
    "exposure_from_scores",
    "rank_by_enumeration",
    "skewnorm_exposure",
]


@dataclass(frozen=True)
class ExposureResult:
    """Exact rank and exposure of one canary among an enumerated candidate space."""

    canary_score: float
    """The canary's score (lower = more likely)."""
    rank: int
    """1 + number of candidates with a strictly lower score."""
    n_ties: int
    """Other candidates whose score equals the canary's (they do not change `rank`)."""
    space_size: int
    """|R|, the canary included."""
    exposure: float
    """log2 |R| - log2 rank, in bits."""

    @property
    def max_exposure(self) -> float:
        """log2 |R|: the exposure of a canary ranked first."""
        return math.log2(self.space_size)


@dataclass(frozen=True)
class SkewNormExposure:
    """Exposure estimated from a skew-normal fit to sampled candidate scores (Carlini et al. 2019, Sec. 4.3)."""

    exposure: float
    """-log2 of the (clipped) fitted CDF at the canary's score, in bits."""
    cdf: float
    """Fitted Pr[score <= canary score] before clipping (may be 0.0 far in the tail)."""
    shape: float
    """Fitted skewness parameter `a` of scipy.stats.skewnorm."""
    loc: float
    scale: float
    n_samples: int
    """How many candidate scores the fit used."""
    clipped: bool
    """True when the CDF was raised to its floor (1/|R|, or the smallest positive double without |R|)."""


def _check_finite(name: str, values: np.ndarray) -> np.ndarray:
    if np.isnan(values).any():
        raise ValueError(f"{name} contains {int(np.isnan(values).sum())} NaN value(s); exposure needs every score")
    return values


def exposure_from_rank(rank: int, space_size: int) -> float:
    """Exposure in bits, log2 |R| - log2 rank (Carlini et al. 2019, Definition 4); `rank` is 1-based."""
    if space_size < 1:
        raise ValueError(f"space_size must be >= 1 (got {space_size})")
    if not 1 <= rank <= space_size:
        raise ValueError(f"rank must be in [1, space_size={space_size}] (got {rank})")
    # math.log2 on Python ints is exact for any size; numpy would round huge spaces through float64 first.
    return math.log2(space_size) - math.log2(rank)


def exact_rank(canary_score: float, candidate_scores: ArrayLike) -> int:
    """1 + the number of candidates scoring strictly lower (more likely) than the canary.

    `candidate_scores` may include the canary's own entry or not: it is never strictly lower than
    itself, so the rank is the same. Ties with the canary do not count (see the module docstring).
    """
    if math.isnan(canary_score):
        raise ValueError("canary_score is NaN")
    scores = _check_finite("candidate_scores", np.asarray(candidate_scores, dtype=np.float64).ravel())
    return 1 + int(np.count_nonzero(scores < canary_score))


def exposure_from_scores(scores: ArrayLike, canary_index: int) -> ExposureResult:
    """Exact exposure when every candidate's score is already in memory: `scores[canary_index]` is the canary."""
    scores = _check_finite("scores", np.asarray(scores, dtype=np.float64).ravel())
    if not 0 <= canary_index < scores.size:
        raise ValueError(f"canary_index must be in [0, {scores.size}) (got {canary_index})")
    canary = float(scores[canary_index])
    rank = exact_rank(canary, scores)
    ties = int(np.count_nonzero(scores == canary)) - 1
    return ExposureResult(canary, rank, ties, int(scores.size), exposure_from_rank(rank, int(scores.size)))


def _batch_starts(space_size: int, batch_size: int, first: int) -> Iterator[int]:
    """Batch starts aligned to multiples of batch_size, the batch holding index `first` yielded first."""
    yield first
    yield from (s for s in range(0, space_size, batch_size) if s != first)


def _score(score_batch: Callable[[np.ndarray], np.ndarray], idx: np.ndarray) -> np.ndarray:
    scores = np.asarray(score_batch(idx), dtype=np.float64)
    if scores.shape != idx.shape:
        raise ValueError(f"score_batch returned shape {scores.shape} for {idx.size} candidates; expected {idx.shape}")
    return _check_finite(f"scores of candidates [{idx[0]}, {idx[-1]}]", scores)


def rank_by_enumeration(
    score_batch: Callable[[np.ndarray], np.ndarray],
    space_size: int,
    canary_index: int,
    batch_size: int,
) -> ExposureResult:
    """Exact rank and exposure by scoring every candidate of R, `batch_size` at a time.

    `score_batch(idx)` gets int64 candidate indices, shape (b,) with b <= batch_size, and returns their
    scores, shape (b,), lower = more likely; mapping an index to a secret (e.g. f"{i:06d}") is the
    caller's. Only running counts are kept, so memory is one batch of model work whatever |R| is.

    Batches are the aligned ranges [k*batch_size, (k+1)*batch_size). The canary's own batch is scored
    first, so its score comes from the same batch composition as any batched rescoring would give
    (padding and batched kernels can move a score in the last bits), and no separate call is made.
    """
    if space_size < 1:
        raise ValueError(f"space_size must be >= 1 (got {space_size})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
    if not 0 <= canary_index < space_size:
        raise ValueError(f"canary_index must be in [0, {space_size}) (got {canary_index})")
    canary_start = canary_index // batch_size * batch_size
    canary = math.nan
    lower = equal = 0
    for start in _batch_starts(space_size, batch_size, canary_start):
        idx = np.arange(start, min(start + batch_size, space_size), dtype=np.int64)
        scores = _score(score_batch, idx)
        if start == canary_start:
            canary = float(scores[canary_index - start])
        lower += int(np.count_nonzero(scores < canary))
        equal += int(np.count_nonzero(scores == canary))
    rank = lower + 1
    # `equal` counted the canary itself once.
    return ExposureResult(canary, rank, equal - 1, space_size, exposure_from_rank(rank, space_size))


def skewnorm_exposure(
    canary_score: float,
    sample_scores: ArrayLike,
    space_size: int | None = None,
) -> SkewNormExposure:
    """Exposure by skew-normal extrapolation (Carlini et al. 2019, Sec. 4.3).

    Fits `scipy.stats.skewnorm` by maximum likelihood to `sample_scores` (scores of candidates drawn
    uniformly from R, lower = more likely) and returns -log2 CDF(canary_score): the fitted fraction of
    R at least as likely as the canary stands in for rank / |R|.

    Clipping: a CDF below 1/|R| would mean a rank below 1, so with `space_size` the CDF is floored at
    1/|R| and the exposure never exceeds log2 |R|. Without it the floor is the smallest positive
    double (about 1022 bits), which only keeps the value finite. `clipped` says when either happened.
    The exposure is never negative since a CDF is at most 1.
    """
    if math.isnan(canary_score):
        raise ValueError("canary_score is NaN")
    sample = _check_finite("sample_scores", np.asarray(sample_scores, dtype=np.float64).ravel())
    if sample.size < 3:
        raise ValueError(f"sample_scores needs at least 3 values to fit a skew-normal (got {sample.size})")
    if not np.isfinite(sample).all():
        raise ValueError("sample_scores contains infinite values; a skew-normal cannot be fitted to them")
    if np.ptp(sample) == 0:
        raise ValueError("sample_scores are all equal; a skew-normal cannot be fitted to them")
    if space_size is not None and space_size < 1:
        raise ValueError(f"space_size must be >= 1 (got {space_size})")
    shape, loc, scale = (float(v) for v in stats.skewnorm.fit(sample))
    cdf = float(stats.skewnorm.cdf(canary_score, shape, loc, scale))
    if math.isnan(cdf):
        raise ValueError(f"skew-normal fit (a={shape}, loc={loc}, scale={scale}) gave a NaN CDF at {canary_score}")
    floor = 1.0 / space_size if space_size is not None else float(np.finfo(np.float64).tiny)
    clipped = cdf < floor
    exposure = max(0.0, -math.log2(max(cdf, floor)))
    return SkewNormExposure(exposure, cdf, shape, loc, scale, int(sample.size), clipped)
