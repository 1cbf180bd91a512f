"""MIA scores and ROC metrics against scikit-learn and brute-force loops."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from lorasec.metrics.mia import (
    bootstrap_auc,
    loss_score,
    mia_auc,
    min_k_plus_plus_score,
    min_k_score,
    reference_score,
    roc_metrics,
    token_stats,
    tpr_at_fpr,
    zlib_score,
)

# Few distinct values so that ties between members and non-members are common.
tied = st.integers(-5, 5).map(float)
wide = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
scores = st.one_of(st.lists(tied, min_size=1, max_size=40), st.lists(wide, min_size=1, max_size=40)).map(np.array)


@settings(max_examples=150, deadline=None)
@given(scores, scores)
def test_mia_auc_matches_sklearn(member: np.ndarray, nonmember: np.ndarray) -> None:
    y = np.r_[np.ones(len(member)), np.zeros(len(nonmember))]
    assert mia_auc(member, nonmember) == pytest.approx(roc_auc_score(y, np.r_[member, nonmember]), abs=1e-12)


def brute_force_tpr(member: np.ndarray, nonmember: np.ndarray, target: float) -> float:
    """Try every threshold "member iff score >= t"; keep the best TPR whose FPR <= target."""
    best = 0.0  # t = +inf flags nobody: FPR 0, TPR 0
    for t in np.unique(np.r_[member, nonmember]):
        if np.mean(nonmember >= t) <= target:
            best = max(best, float(np.mean(member >= t)))
    return best


@settings(max_examples=150, deadline=None)
@given(scores, scores, st.sampled_from([0.001, 0.01, 0.1, 0.25, 0.5, 1.0]))
def test_tpr_at_fpr_matches_brute_force(member: np.ndarray, nonmember: np.ndarray, target: float) -> None:
    assert tpr_at_fpr(member, nonmember, [target])[target] == brute_force_tpr(member, nonmember, target)


def test_tpr_at_fpr_keeps_collinear_points() -> None:
    # ROC points (0, 0), (1/3, 1/3), (2/3, 2/3), (1, 1) are collinear; roc_curve's default drops (2/3, 2/3)
    # and would answer 1/3 at FPR <= 2/3.
    member = nonmember = np.array([3.0, 2.0, 1.0])
    assert tpr_at_fpr(member, nonmember, [2 / 3])[2 / 3] == pytest.approx(2 / 3)


def test_auc_on_identical_and_separated_distributions() -> None:
    rng = np.random.default_rng(0)
    same = roc_metrics(rng.normal(size=2000), rng.normal(size=2000), n_bootstrap=200, seed=1)
    assert same.auc == pytest.approx(0.5, abs=0.03)
    assert same.tpr_at_fpr[0.1] == pytest.approx(0.1, abs=0.03)
    apart = roc_metrics(rng.normal(10.0, 1.0, 500), rng.normal(size=500), n_bootstrap=200, seed=1)
    assert apart.auc == apart.auc_mean == 1.0 and apart.auc_std == 0.0
    assert apart.tpr_at_fpr == {0.001: 1.0, 0.01: 1.0, 0.1: 1.0}
    assert (apart.n_members, apart.n_nonmembers, apart.n_bootstrap, apart.seed) == (500, 500, 200, 1)


def test_bootstrap_is_reproducible_and_recomputable() -> None:
    rng = np.random.default_rng(3)
    mem, non = rng.normal(0.3, 1.0, 60), rng.normal(0.0, 1.0, 45)
    aucs = bootstrap_auc(mem, non, n_bootstrap=50, seed=9)
    # The documented draw order, replayed with sklearn as the AUC.
    replay = np.random.default_rng(9)
    expected = []
    for _ in range(50):
        mi, ni = replay.integers(0, 60, 60), replay.integers(0, 45, 45)
        expected.append(roc_auc_score(np.r_[np.ones(60), np.zeros(45)], np.r_[mem[mi], non[ni]]))
    np.testing.assert_allclose(aucs, expected, atol=1e-12)
    res = roc_metrics(mem, non, n_bootstrap=50, seed=9)
    assert res.auc_mean == pytest.approx(np.mean(expected)) and res.auc_std == pytest.approx(np.std(expected))
    assert res == roc_metrics(mem, non, n_bootstrap=50, seed=9)
    assert abs(res.auc_mean - res.auc) < 3 * res.auc_std


def test_nan_and_empty_inputs_raise() -> None:
    with pytest.raises(ValueError, match="member_scores contains 1 NaN"):
        roc_metrics([0.1, float("nan")], [0.2])
    with pytest.raises(ValueError, match="nonmember_scores"):
        mia_auc([0.1], [])
    with pytest.raises(ValueError, match="NaN"):
        loss_score([-0.1, float("nan")])
    with pytest.raises(ValueError, match="FPR"):
        tpr_at_fpr([1.0], [0.0], [0.0])


def test_scores_on_a_hand_example() -> None:
    lp = np.log([0.5, 0.25, 0.9, 0.01, 0.6, 0.7, 0.8, 0.3, 0.2, 0.95])
    assert loss_score(lp) == pytest.approx(np.mean(lp))
    # k = 20% of 10 tokens: the two lowest, log 0.01 and log 0.2.
    assert min_k_score(lp) == pytest.approx((math.log(0.01) + math.log(0.2)) / 2)
    # floor(0.2 * 3) = 0 -> at least one token.
    assert min_k_score(lp[:3]) == pytest.approx(math.log(0.25))
    ref = np.log([0.1, 0.1, 0.1])
    assert reference_score(lp, ref) == pytest.approx(-np.mean(ref) + np.mean(lp))
    text = "the secret number is 123456"
    assert zlib_score(lp, text) == pytest.approx(np.mean(lp) / len(zlib.compress(text.encode("utf-8"))))


def test_scores_are_oriented_higher_for_members() -> None:
    likely, unlikely = np.log([0.9, 0.8, 0.95, 0.7, 0.9]), np.log([0.1, 0.2, 0.05, 0.3, 0.1])
    mu, sigma = np.full(5, -2.0), np.full(5, 1.0)
    assert loss_score(likely) > loss_score(unlikely)
    assert min_k_score(likely) > min_k_score(unlikely)
    assert zlib_score(likely, "abc") > zlib_score(unlikely, "abc")
    assert reference_score(likely, unlikely) > reference_score(unlikely, likely)
    assert min_k_plus_plus_score(likely, mu, sigma) > min_k_plus_plus_score(unlikely, mu, sigma)


def test_nll_instead_of_logprob_is_refused() -> None:
    with pytest.raises(ValueError, match="NLLs"):
        loss_score([0.5, 1.2])


def brute_force_min_k_pp(logits: torch.Tensor, ids: torch.Tensor, k: float) -> float:
    """Zhang et al. 2024, Eq. 4-5, one token and one vocabulary entry at a time in Python floats."""
    zs = []
    for t in range(logits.shape[0]):
        row = [float(v) for v in logits[t]]
        m = max(row)
        log_z = m + math.log(sum(math.exp(v - m) for v in row))
        logp = [v - log_z for v in row]
        mu = sum(math.exp(lp) * lp for lp in logp)
        var = sum(math.exp(lp) * (lp - mu) ** 2 for lp in logp)
        zs.append((logp[int(ids[t])] - mu) / math.sqrt(var))
    zs.sort()
    n = max(1, int(len(zs) * k))
    return sum(zs[:n]) / n


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [0.2, 0.5, 1.0])
def test_min_k_plus_plus_matches_brute_force(seed: int, k: float) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(11, 17, generator=g) * 3  # (T, V)
    ids = torch.randint(0, 17, (11,), generator=g)
    st_ = token_stats(logits, ids)
    assert min_k_plus_plus_score(st_.logprobs, st_.mu, st_.sigma, k=k) == pytest.approx(
        brute_force_min_k_pp(logits, ids, k), rel=1e-9
    )
    # The authors' formula (E[log p^2] - mu^2), fine in float64 on a small example.
    logp = torch.log_softmax(logits.double(), -1)
    mu = (logp.exp() * logp).sum(-1)
    sigma = ((logp.exp() * logp**2).sum(-1) - mu**2).sqrt()
    np.testing.assert_allclose(st_.mu, mu.numpy(), rtol=1e-12)
    np.testing.assert_allclose(st_.sigma, sigma.numpy(), rtol=1e-9)
    np.testing.assert_allclose(st_.logprobs, logp.gather(-1, ids[:, None]).squeeze(-1).numpy(), rtol=1e-12)


def test_token_stats_tolerates_masked_vocabulary() -> None:
    logits = torch.tensor([[0.0, 1.0, float("-inf")], [2.0, float("-inf"), 0.5]])
    st_ = token_stats(logits, torch.tensor([1, 0]))
    assert np.isfinite(st_.mu).all() and np.isfinite(st_.sigma).all() and (st_.sigma > 0).all()
    with pytest.raises(ValueError, match="sigma must be > 0"):
        min_k_plus_plus_score([-0.1], [-0.1], [0.0])
