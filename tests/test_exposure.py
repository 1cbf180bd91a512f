"""Exposure (Carlini et al. 2019) against brute-force ranks and a known skew-normal."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lorasec.metrics.exposure import (
    exact_rank,
    exposure_from_rank,
    exposure_from_scores,
    rank_by_enumeration,
    skewnorm_exposure,
)

SPACE = 1000  # every 3-digit secret "000" ... "999"


def secret_score(i: int) -> float:
    """A deterministic stand-in for a model's NLL of f"the secret is {i:03d}", with deliberate ties."""
    digest = hashlib.sha256(f"the secret is {i:03d}".encode()).digest()
    return int.from_bytes(digest[:2], "big") % 97 / 7.0  # 97 distinct values over 1000 secrets: many ties


ALL_SCORES = np.array([secret_score(i) for i in range(SPACE)])


def brute_force_rank(canary: int) -> int:
    """Sort all secrets by (score, canary first among equals) and read off the canary's 1-based position."""
    order = sorted(range(SPACE), key=lambda i: (secret_score(i), i != canary))
    return order.index(canary) + 1


@settings(max_examples=40, deadline=None)
@given(canary=st.integers(0, SPACE - 1), batch_size=st.integers(1, 1200))
def test_enumeration_matches_brute_force_rank(canary: int, batch_size: int) -> None:
    seen: list[int] = []

    def score_batch(idx: np.ndarray) -> np.ndarray:
        assert idx.dtype == np.int64 and 1 <= idx.size <= batch_size
        seen.extend(idx.tolist())
        return np.array([secret_score(int(i)) for i in idx])

    res = rank_by_enumeration(score_batch, SPACE, canary, batch_size)
    rank = brute_force_rank(canary)
    assert res.rank == rank
    assert res.exposure == pytest.approx(math.log2(SPACE) - math.log2(rank))
    assert res.n_ties == int(np.sum(ALL_SCORES == ALL_SCORES[canary])) - 1
    assert res.canary_score == ALL_SCORES[canary]
    assert sorted(seen) == list(range(SPACE))  # every candidate scored exactly once
    assert exposure_from_scores(ALL_SCORES, canary) == res
    assert exact_rank(ALL_SCORES[canary], ALL_SCORES) == rank
    assert exact_rank(ALL_SCORES[canary], np.delete(ALL_SCORES, canary)) == rank  # canary in or out: same rank


def test_unique_best_canary_has_max_exposure() -> None:
    scores = ALL_SCORES.copy()
    scores[123] = -1.0
    res = exposure_from_scores(scores, 123)
    assert (res.rank, res.n_ties) == (1, 0)
    assert res.exposure == res.max_exposure == pytest.approx(math.log2(SPACE))


@given(space=st.integers(1, 10**12), data=st.data())
def test_exposure_bounded_by_log2_space(space: int, data: st.DataObject) -> None:
    rank = data.draw(st.integers(1, space))
    e = exposure_from_rank(rank, space)
    assert 0.0 <= e <= math.log2(space) + 1e-12


@pytest.mark.parametrize(("rank", "space"), [(0, 10), (11, 10), (1, 0)])
def test_exposure_from_rank_rejects_impossible_ranks(rank: int, space: int) -> None:
    with pytest.raises(ValueError):
        exposure_from_rank(rank, space)


def test_nan_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        exact_rank(1.0, [0.5, float("nan")])
    with pytest.raises(ValueError, match="NaN"):
        rank_by_enumeration(lambda idx: np.full(idx.size, np.nan), 10, 0, 4)
    with pytest.raises(ValueError, match="shape"):
        rank_by_enumeration(lambda idx: np.zeros(idx.size + 1), 10, 0, 4)


# Skew-normal extrapolation. The whole space R (10^6 candidates) really is skew-normal; the fit sees a
# uniform sample of 10^5 of them. Tolerance: 0.5 bits against the exact exposure from ranking all of R.
# Ranks start at 100: the exact rank of a canary among 10^6 skew-normal draws is itself a sample, with
# relative noise ~ 1/sqrt(rank) (10%, ~0.15 bits at rank 100; ~0.3 bits at rank 20, too close to the
# tolerance to say anything about the fit). Deeper tails are checked against the true CDF below.
SKEW_TOL_BITS = 0.5


@pytest.mark.parametrize("shape", [4.0, -4.0])
@pytest.mark.parametrize("target_rank", [100, 1000, 100_000])
def test_skewnorm_exposure_close_to_exact(shape: float, target_rank: int) -> None:
    rng = np.random.default_rng(7)
    space = stats.skewnorm.rvs(shape, loc=5.0, scale=2.0, size=10**6, random_state=rng)
    canary_index = int(np.argsort(space)[target_rank - 1])
    exact = exposure_from_scores(space, canary_index)
    sample = rng.choice(space, size=10**5, replace=False)
    est = skewnorm_exposure(space[canary_index], sample, space_size=space.size)
    assert exact.rank == target_rank
    assert abs(est.exposure - exact.exposure) < SKEW_TOL_BITS
    assert not est.clipped
    assert est.shape == pytest.approx(shape, rel=0.2)


@pytest.mark.parametrize("shape", [4.0, -4.0])
@pytest.mark.parametrize("true_bits", [20.0, 30.0])
def test_skewnorm_extrapolates_past_what_could_be_enumerated(shape: float, true_bits: float) -> None:
    """A canary rarer than 1 in 10^6 (20 or 30 bits): the estimate matches the true distribution's -log2 CDF."""
    rng = np.random.default_rng(11)
    sample = stats.skewnorm.rvs(shape, loc=5.0, scale=2.0, size=10**5, random_state=rng)
    canary = float(stats.skewnorm.ppf(2.0**-true_bits, shape, loc=5.0, scale=2.0))
    est = skewnorm_exposure(canary, sample, space_size=2**40)
    assert abs(est.exposure - true_bits) < SKEW_TOL_BITS


def test_skewnorm_exposure_is_clipped_to_log2_space() -> None:
    rng = np.random.default_rng(0)
    sample = stats.skewnorm.rvs(3.0, loc=10.0, scale=1.0, size=5000, random_state=rng)
    far = skewnorm_exposure(-1e6, sample, space_size=10**6)
    assert far.clipped and far.exposure == pytest.approx(math.log2(10**6))
    unbounded = skewnorm_exposure(-1e6, sample)
    assert unbounded.clipped and math.isfinite(unbounded.exposure) and unbounded.exposure > 1000
    worst = skewnorm_exposure(1e6, sample, space_size=10**6)
    assert worst.exposure == 0.0 and not worst.clipped


def test_skewnorm_refuses_degenerate_samples() -> None:
    with pytest.raises(ValueError, match="NaN"):
        skewnorm_exposure(0.0, [1.0, 2.0, float("nan")])
    with pytest.raises(ValueError, match="equal"):
        skewnorm_exposure(0.0, [1.0, 1.0, 1.0])
