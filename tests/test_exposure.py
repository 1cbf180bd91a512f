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
    ExposureResult,
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


@settings(deadline=None)
@given(space=st.integers(1, 10**12), data=st.data())
def test_exposure_bounded_by_log2_space(space: int, data: st.DataObject) -> None:
    rank = data.draw(st.integers(1, space))
    e = exposure_from_rank(rank, space)
    assert 0.0 <= e <= math.log2(space) + 1e-12


def count_strictly_better(canary: int, score_one: callable, space: int) -> tuple[int, int]:
    """Score the candidates one at a time; (rank, ties) with rank = 1 + #strictly lower, ties = #equal others."""
    mine = score_one(canary)
    better = ties = 0
    for i in range(space):
        s = score_one(i)
        better += s < mine
        ties += s == mine and i != canary
    return 1 + better, ties


# |R| = 8, scores lower = more likely; several ties at 1.0 and 2.0.
HAND = [3.0, 1.0, 2.0, 1.0, 2.0, 5.0, 2.0, 0.5]


@pytest.mark.parametrize(
    ("canary", "rank", "ties", "bits"),
    [
        (7, 1, 0, 3.0),  # the unique best: log2 8 - log2 1
        (1, 2, 1, 2.0),  # 0.5 is better; index 3 ties -> optimistic rank 2
        (3, 2, 1, 2.0),
        (2, 4, 2, 1.0),  # 0.5, 1.0, 1.0 better; indices 4 and 6 tie
        (0, 7, 0, 3.0 - math.log2(7)),
        (5, 8, 0, 0.0),  # the worst: no exposure
    ],
)
@pytest.mark.parametrize("batch_size", [1, 3, 8, 20])
def test_exposure_by_hand(canary: int, rank: int, ties: int, bits: float, batch_size: int) -> None:
    assert count_strictly_better(canary, HAND.__getitem__, len(HAND)) == (rank, ties)
    expected = ExposureResult(HAND[canary], rank, ties, 8, bits)
    assert exposure_from_scores(HAND, canary) == pytest.approx(expected)
    got = rank_by_enumeration(lambda idx: np.array([HAND[i] for i in idx]), 8, canary, batch_size)
    assert (got.canary_score, got.rank, got.n_ties, got.space_size) == (HAND[canary], rank, ties, 8)
    assert got.exposure == pytest.approx(bits, abs=1e-12)
    assert got.max_exposure == 3.0
    assert exact_rank(HAND[canary], HAND) == rank
    assert exposure_from_rank(rank, 8) == pytest.approx(bits, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 6).map(float), min_size=1, max_size=40), st.data())
def test_ranks_match_one_at_a_time_counting(scores: list[float], data: st.DataObject) -> None:
    canary = data.draw(st.integers(0, len(scores) - 1))
    batch_size = data.draw(st.integers(1, len(scores) + 2))
    rank, ties = count_strictly_better(canary, scores.__getitem__, len(scores))
    bits = math.log2(len(scores)) - math.log2(rank)
    batches: list[list[int]] = []

    def score_batch(idx: np.ndarray) -> np.ndarray:
        batches.append(idx.tolist())
        return np.array([scores[i] for i in idx])

    res = rank_by_enumeration(score_batch, len(scores), canary, batch_size)
    assert (res.rank, res.n_ties, res.space_size) == (rank, ties, len(scores))
    assert res.exposure == pytest.approx(bits, abs=1e-12)
    # The canary's own aligned batch comes first; then every other aligned batch once, in order.
    start = canary // batch_size * batch_size
    aligned = [list(range(s, min(s + batch_size, len(scores)))) for s in range(0, len(scores), batch_size)]
    assert batches == [aligned[start // batch_size]] + [b for b in aligned if b[0] != start]
    full = exposure_from_scores(scores, canary)
    assert (full.rank, full.n_ties) == (rank, ties) and full.exposure == pytest.approx(bits, abs=1e-12)


def test_exposure_from_rank_by_hand() -> None:
    assert exposure_from_rank(1, 1) == 0.0
    assert exposure_from_rank(1, 10**6) == pytest.approx(math.log2(10**6))
    assert exposure_from_rank(250, 1000) == pytest.approx(2.0)
    assert exposure_from_rank(1000, 1000) == 0.0
    # Python ints: exact for spaces beyond float64's 2**53 integer range.
    assert exposure_from_rank(2, 2**80) == 79.0
    assert exposure_from_rank(3, 3 * 2**70) == pytest.approx(70.0, abs=1e-9)


def test_input_checks_and_their_messages() -> None:
    with pytest.raises(ValueError, match=r"space_size must be >= 1 \(got 0\)"):
        exposure_from_rank(1, 0)
    with pytest.raises(ValueError, match=r"rank must be in \[1, space_size=10\] \(got 11\)"):
        exposure_from_rank(11, 10)
    with pytest.raises(ValueError, match="canary_score is NaN"):
        exact_rank(float("nan"), [1.0])
    with pytest.raises(ValueError, match=r"candidate_scores contains 2 NaN value\(s\)"):
        exact_rank(1.0, [float("nan"), 0.0, float("nan")])
    with pytest.raises(ValueError, match=r"canary_index must be in \[0, 3\) \(got 3\)"):
        exposure_from_scores([1.0, 2.0, 3.0], 3)
    with pytest.raises(ValueError, match="canary_index"):
        exposure_from_scores([1.0, 2.0, 3.0], -1)
    with pytest.raises(ValueError, match="scores contains 1 NaN"):
        exposure_from_scores([1.0, float("nan")], 0)
    ok = lambda idx: idx.astype(np.float64)  # noqa: E731
    with pytest.raises(ValueError, match=r"space_size must be >= 1 \(got 0\)"):
        rank_by_enumeration(ok, 0, 0, 4)
    with pytest.raises(ValueError, match=r"batch_size must be >= 1 \(got 0\)"):
        rank_by_enumeration(ok, 10, 0, 0)
    with pytest.raises(ValueError, match=r"canary_index must be in \[0, 10\) \(got 10\)"):
        rank_by_enumeration(ok, 10, 10, 4)
    with pytest.raises(ValueError, match="canary_index"):
        rank_by_enumeration(ok, 10, -1, 4)
    with pytest.raises(ValueError, match=r"score_batch returned shape \(5,\) for 4 candidates; expected \(4,\)"):
        rank_by_enumeration(lambda idx: np.zeros(idx.size + 1), 10, 0, 4)
    with pytest.raises(ValueError, match=r"scores of candidates \[4, 7\] contains 1 NaN"):
        rank_by_enumeration(lambda idx: np.where(idx == 6, np.nan, 0.0), 10, 0, 4)
    assert rank_by_enumeration(ok, 10, 9, 4).rank == 10
    assert rank_by_enumeration(ok, 1, 0, 4) == ExposureResult(0.0, 1, 0, 1, 0.0)


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


def test_skewnorm_fields_and_checks() -> None:
    rng = np.random.default_rng(5)
    sample = stats.skewnorm.rvs(4.0, loc=5.0, scale=2.0, size=20_000, random_state=rng)
    est = skewnorm_exposure(4.0, sample, space_size=10**6)
    assert est.n_samples == 20_000 and not est.clipped
    assert (est.shape, est.loc, est.scale) == pytest.approx((4.0, 5.0, 2.0), rel=0.15)
    # The true distribution's CDF at 4.0, read off by hand from scipy with the generating parameters.
    assert est.cdf == pytest.approx(float(stats.skewnorm.cdf(4.0, 4.0, loc=5.0, scale=2.0)), abs=0.01)
    assert est.exposure == pytest.approx(-math.log2(est.cdf), abs=1e-12)
    # Clipped at 1/|R| with |R| = 4 exactly: the floor applies only below it.
    far = skewnorm_exposure(-50.0, sample, space_size=4)
    assert far.clipped and far.exposure == 2.0 and far.cdf < 0.25
    near = skewnorm_exposure(100.0, sample, space_size=4)
    assert not near.clipped and near.exposure == 0.0 and near.cdf == pytest.approx(1.0)
    assert skewnorm_exposure(4.0, sample).exposure == est.exposure  # no |R|: same unless in the far tail
    with pytest.raises(ValueError, match="canary_score is NaN"):
        skewnorm_exposure(float("nan"), sample)
    with pytest.raises(ValueError, match=r"needs at least 3 values to fit a skew-normal \(got 2\)"):
        skewnorm_exposure(0.0, [1.0, 2.0])
    assert skewnorm_exposure(0.0, [1.0, 2.0, 4.0]).n_samples == 3  # three is enough
    with pytest.raises(ValueError, match="infinite"):
        skewnorm_exposure(0.0, [1.0, 2.0, float("inf")])
    with pytest.raises(ValueError, match=r"space_size must be >= 1 \(got 0\)"):
        skewnorm_exposure(0.0, [1.0, 2.0, 4.0], space_size=0)
    assert skewnorm_exposure(0.0, [1.0, 2.0, 4.0], space_size=1).exposure == 0.0  # |R| = 1: nothing to expose


def test_exact_rank_compares_in_float64() -> None:
    # float32(0.1) = 0.10000000149...; a float64 canary just above it is strictly worse. Rounding the canary to
    # float32 (as a float32 comparison would) makes the two equal and hides the better candidate.
    cand = np.array([0.1], dtype=np.float32)
    assert exact_rank(0.100000002, cand) == 2
    assert exact_rank(0.1000000014, cand) == 1


def test_skewnorm_cdf_exactly_at_the_floor_is_not_clipped(monkeypatch: pytest.MonkeyPatch) -> None:
    sample = [1.0, 2.0, 4.0, 3.0]
    monkeypatch.setattr(stats.skewnorm, "cdf", lambda *args, **kwargs: 0.25)
    at_floor = skewnorm_exposure(0.0, sample, space_size=4)
    assert not at_floor.clipped and at_floor.exposure == 2.0 and at_floor.cdf == 0.25
    monkeypatch.setattr(stats.skewnorm, "cdf", lambda *args, **kwargs: float("nan"))
    with pytest.raises(ValueError, match=r"^skew-normal fit \(a=.*, loc=.*, scale=.*\) gave a NaN CDF at 0\.0$"):
        skewnorm_exposure(0.0, sample)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: exact_rank(float("nan"), [1.0]), r"^canary_score is NaN$"),
        (lambda: skewnorm_exposure(float("nan"), [1.0, 2.0, 3.0]), r"^canary_score is NaN$"),
        (lambda: skewnorm_exposure(0.0, [1.0, float("nan"), 3.0]),
         r"^sample_scores contains 1 NaN value\(s\); exposure needs every score$"),
        (lambda: skewnorm_exposure(0.0, [1.0, float("inf"), 3.0]),
         r"^sample_scores contains infinite values; a skew-normal cannot be fitted to them$"),
        (lambda: skewnorm_exposure(0.0, [2.0, 2.0, 2.0]),
         r"^sample_scores are all equal; a skew-normal cannot be fitted to them$"),
    ],
)
def test_exposure_error_messages(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
