"""MIA scores and ROC metrics against pairwise counting, brute-force threshold sweeps and hand-computed values."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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
    zlib_entropy,
    zlib_score,
)

# Few distinct values so that ties between members and non-members are common.
tied = st.integers(-5, 5).map(float)
wide = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
scores = st.one_of(st.lists(tied, min_size=1, max_size=30), st.lists(wide, min_size=1, max_size=30)).map(np.array)


def pairwise_auc(member: np.ndarray, nonmember: np.ndarray) -> float:
    """P(member score > non-member score) + P(tie) / 2 over every (member, non-member) pair."""
    total = 0.0
    for m in member:
        for n in nonmember:
            total += 1.0 if m > n else 0.5 if m == n else 0.0
    return total / (len(member) * len(nonmember))


def test_auc_by_hand() -> None:
    # Pairs (3,2) (3,1) (2,1) (2,1) are wins, (2,2) twice a tie: (4 + 2 * 0.5) / 6.
    assert mia_auc([3.0, 2.0, 2.0], [2.0, 1.0]) == pytest.approx(5 / 6)
    assert mia_auc([1.0, 2.0], [3.0, 4.0]) == 0.0  # members lower: AUC 0, not 1 (orientation)
    assert mia_auc([5.0], [5.0]) == pytest.approx(0.5)
    assert roc_metrics([3.0, 2.0, 2.0], [2.0, 1.0], n_bootstrap=2).auc == pytest.approx(5 / 6)


@settings(max_examples=100, deadline=None)
@given(scores, scores)
def test_mia_auc_matches_pairwise_counting(member: np.ndarray, nonmember: np.ndarray) -> None:
    expected = pairwise_auc(member, nonmember)
    assert mia_auc(member, nonmember) == pytest.approx(expected, abs=1e-12)
    # The bootstrap's rank-based AUC on the identity resample is the same number.
    res = roc_metrics(member, nonmember, fprs=(0.5,), n_bootstrap=2)
    assert res.auc == pytest.approx(expected, abs=1e-12)


def brute_force_tpr(member: np.ndarray, nonmember: np.ndarray, target: float) -> float:
    """Try every threshold "member iff score >= t"; keep the best TPR whose FPR <= target."""
    best = 0.0  # t = +inf flags nobody: FPR 0, TPR 0
    for t in np.unique(np.r_[member, nonmember]):
        if np.mean(nonmember >= t) <= target:
            best = max(best, float(np.mean(member >= t)))
    return best


@settings(max_examples=100, deadline=None)
@given(scores, scores, st.sampled_from([0.001, 0.01, 0.1, 0.25, 0.5, 1.0]))
def test_tpr_at_fpr_matches_brute_force(member: np.ndarray, nonmember: np.ndarray, target: float) -> None:
    assert tpr_at_fpr(member, nonmember, [target])[target] == brute_force_tpr(member, nonmember, target)


def test_tpr_at_fpr_by_hand() -> None:
    member = np.array([0.9, 0.8, 0.7, 0.3])
    nonmember = np.array([0.85, 0.6, 0.5, 0.4, 0.2])
    # Thresholds: 0.9 -> (FPR 0, TPR 1/4); 0.8 -> (1/5, 2/4); 0.7 -> (1/5, 3/4); 0.6 -> (2/5, 3/4); ...
    got = tpr_at_fpr(member, nonmember, [0.001, 0.1, 0.2, 0.39, 0.4, 1.0])
    assert got == {0.001: 0.25, 0.1: 0.25, 0.2: 0.75, 0.39: 0.75, 0.4: 0.75, 1.0: 1.0}
    assert all(type(k) is float and type(v) is float for k, v in got.items())
    # Exactly at FPR 1/5 the point (1/5, 3/4) counts ("<=", not "<").
    res = roc_metrics(member, nonmember, n_bootstrap=2)
    assert res.tpr_at_fpr == {0.001: 0.25, 0.01: 0.25, 0.1: 0.25}  # the default FPRs
    # Nothing flags no non-member except the empty threshold: TPR 0 at FPR 0.
    assert tpr_at_fpr([1.0, 2.0], [3.0], [0.5]) == {0.5: 0.0}


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
    # The documented draw order, replayed with the pairwise-counting AUC.
    replay = np.random.default_rng(9)
    expected = []
    for _ in range(50):
        mi, ni = replay.integers(0, 60, 60), replay.integers(0, 45, 45)
        expected.append(pairwise_auc(mem[mi], non[ni]))
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


def test_token_stats_masked_vocabulary_values_by_hand() -> None:
    # Row 0: logits (0, 1, -inf) -> p = (1, e) / (1 + e) over the two live entries; the -inf entry adds nothing.
    logits = torch.tensor([[0.0, 1.0, float("-inf")]])
    st_ = token_stats(logits, torch.tensor([1]))
    q = 1 / (1 + math.e)
    logp = [math.log(q), math.log(1 - q)]
    mu = q * logp[0] + (1 - q) * logp[1]
    var = q * (logp[0] - mu) ** 2 + (1 - q) * (logp[1] - mu) ** 2
    np.testing.assert_allclose(st_.logprobs, [logp[1]], rtol=1e-12)
    np.testing.assert_allclose(st_.mu, [mu], rtol=1e-12)
    np.testing.assert_allclose(st_.sigma, [math.sqrt(var)], rtol=1e-12)
    assert st_.logprobs.dtype == st_.mu.dtype == st_.sigma.dtype == np.float64


def test_token_stats_refuses_misaligned_shapes() -> None:
    with pytest.raises(ValueError, match=r"need logits \(T, V\) and target_ids \(T,\)"):
        token_stats(torch.zeros(3, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="need logits"):
        token_stats(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="need logits"):
        token_stats(torch.zeros(3, 5), torch.zeros(3, 1, dtype=torch.long))


def test_min_k_plus_plus_by_hand_and_its_checks() -> None:
    lp = np.log([0.5, 0.25, 0.125, 0.8, 0.9])
    mu = np.array([-1.0, -2.0, -1.0, -0.5, -0.5])
    sigma = np.array([2.0, 1.0, 0.5, 1.0, 4.0])
    z = (lp - mu) / sigma
    # k = 0.4 of 5 tokens: the two lowest z-scores.
    assert min_k_plus_plus_score(lp, mu, sigma, k=0.4) == pytest.approx(np.sort(z)[:2].mean())
    assert min_k_plus_plus_score(lp, mu, sigma) == pytest.approx(z.min())  # default k = 0.2: one token
    with pytest.raises(ValueError, match="one shape"):
        min_k_plus_plus_score(lp, mu[:4], sigma)
    with pytest.raises(ValueError, match="one shape"):
        min_k_plus_plus_score(lp, mu, sigma[:4])
    with pytest.raises(ValueError, match="1 position"):
        min_k_plus_plus_score(lp, mu, np.r_[sigma[:4], -1.0])
    with pytest.raises(ValueError, match="mu contains"):
        min_k_plus_plus_score(lp, np.r_[mu[:4], np.nan], sigma)
    with pytest.raises(ValueError, match="NLLs"):
        min_k_plus_plus_score(-lp, mu, sigma)


def test_min_k_fraction_checks() -> None:
    lp = np.log([0.5, 0.25, 0.125, 0.8])
    assert min_k_score(lp, k=1.0) == pytest.approx(lp.mean())
    assert min_k_score(lp, k=0.5) == pytest.approx((math.log(0.125) + math.log(0.25)) / 2)
    assert min_k_score(lp, k=0.74) == pytest.approx((math.log(0.125) + math.log(0.25)) / 2)  # floor(2.96) = 2
    for bad in (0.0, -0.1, 1.01):
        with pytest.raises(ValueError, match=r"k must be in \(0, 1\]"):
            min_k_score(lp, k=bad)


def test_input_validation_messages() -> None:
    with pytest.raises(ValueError, match=r"token_logprobs must be a non-empty 1-D array \(got shape \(0,\)\)"):
        loss_score([])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        loss_score([[-0.1, -0.2]])
    with pytest.raises(ValueError, match=r"contains 2 NaN/inf value\(s\) of 3"):
        loss_score([-0.1, float("-inf"), float("nan")])
    with pytest.raises(ValueError, match=r"max is 1\.2: were NLLs passed"):
        loss_score([-0.5, 1.2])
    assert loss_score([0.0, -1.0]) == -0.5  # log p = 0 (p = 1) is a valid log-probability
    with pytest.raises(ValueError, match="reference_logprobs"):
        reference_score([-0.1], [0.3])
    with pytest.raises(ValueError, match="target_logprobs"):
        reference_score([0.3], [-0.1])
    with pytest.raises(ValueError, match="token_logprobs"):
        zlib_score([0.3], "abc")
    with pytest.raises(ValueError, match=r"n_bootstrap must be >= 2 for a standard deviation \(got 1\)"):
        bootstrap_auc([1.0], [0.0], n_bootstrap=1, seed=0)
    with pytest.raises(ValueError, match="nonmember_scores contains 1"):
        bootstrap_auc([1.0], [float("inf")], n_bootstrap=2, seed=0)
    with pytest.raises(ValueError, match=r"each target FPR must be in \(0, 1\] \(got 1.5\)"):
        tpr_at_fpr([1.0], [0.0], [0.1, 1.5])
    assert tpr_at_fpr([1.0], [0.0], [1.0]) == {1.0: 1.0}


def test_reference_score_means_each_model_over_its_own_tokens() -> None:
    # Target mean NLL 0.5 over 2 tokens; reference mean NLL 2.0 over 3 tokens (another tokenizer): 2.0 - 0.5.
    assert reference_score([-0.25, -0.75], [-1.0, -2.0, -3.0]) == pytest.approx(1.5)
    assert zlib_entropy("") == len(zlib.compress(b""))
    assert zlib_entropy("é" * 50) < zlib_entropy(bytes(range(100)).hex())  # repetitive text compresses better


def test_roc_metrics_defaults_and_fields() -> None:
    mem, non = np.array([0.9, 0.8, 0.7, 0.3]), np.array([0.85, 0.6, 0.5, 0.4, 0.2])
    res = roc_metrics(mem, non)
    assert (res.n_members, res.n_nonmembers, res.n_bootstrap, res.seed) == (4, 5, 1000, 0)
    aucs = bootstrap_auc(mem, non, n_bootstrap=1000, seed=0)
    assert (res.auc_mean, res.auc_std) == (float(aucs.mean()), float(aucs.std()))
    assert res.auc == pytest.approx(pairwise_auc(mem, non))
    assert set(res.tpr_at_fpr) == {0.001, 0.01, 0.1}


def test_scores_are_computed_in_float64() -> None:
    # float32 input: the mean of -2**24 and -1 is -(2**24 + 1) / 2 exactly in float64; float32 loses the 1.
    lp = np.array([-(2.0**24), -1.0], dtype=np.float32)
    assert loss_score(lp) == -(2**24 + 1) / 2
    assert min_k_score(lp, k=1.0) == -(2**24 + 1) / 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: loss_score([0.5]), r"^token_logprobs must be log-probabilities \(<= 0\); max is 0\.5: "),
        (lambda: min_k_score([0.5]), r"^token_logprobs must be log-probabilities"),
        (lambda: zlib_score([0.5], "a"), r"^token_logprobs must be log-probabilities"),
        (lambda: reference_score([float("nan")], [-1.0]), r"^target_logprobs contains 1 NaN/inf value\(s\) of 1;"),
        (lambda: reference_score([-1.0], [float("nan")]), r"^reference_logprobs contains 1 NaN/inf"),
        (lambda: min_k_plus_plus_score([0.5], [-1.0], [1.0]), r"^token_logprobs must be log-probabilities"),
        (lambda: min_k_plus_plus_score([-0.5], [np.inf], [1.0]), r"^mu contains 1 NaN/inf"),
        (lambda: min_k_plus_plus_score([-0.5], [-1.0], [np.nan]), r"^sigma contains 1 NaN/inf"),
        (lambda: min_k_plus_plus_score([-0.5, -0.1], [-1.0, -1.0], [0.0, 1.0]),
         r"^sigma must be > 0 at every position; 1 position\(s\) are not$"),
        (lambda: mia_auc([np.nan], [0.0]),
         r"^member_scores contains 1 NaN/inf value\(s\) of 1; refusing to drop them$"),
        (lambda: mia_auc([0.0], [np.nan, 1.0]), r"^nonmember_scores contains 1 NaN/inf value\(s\) of 2;"),
        (lambda: tpr_at_fpr([np.nan], [0.0], [0.1]), r"^member_scores contains"),
        (lambda: tpr_at_fpr([0.0], [], [0.1]),
         r"^nonmember_scores must be a non-empty 1-D array \(got shape \(0,\)\)$"),
    ],
)
def test_errors_name_the_offending_input(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("k,n,expected", [(0.29, 100, 29), (0.57, 100, 57), (0.7, 90, 63), (0.2, 63, 12), (0.01, 5, 1)])
def test_min_k_takes_floor_of_k_times_t_tokens_despite_float_rounding(k, n, expected):
    lp = -np.arange(1, n + 1, dtype=np.float64)  # token t has log-prob -t: the lowest m are the last m
    assert min_k_score(lp, k) == pytest.approx(np.mean(lp[-expected:]))
