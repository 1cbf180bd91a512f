"""The statistics a conclusion needs (issue 31, part 3), each against an independent reference on fixed inputs:
paired t-test and t interval (scipy), TOST (statsmodels' ttost_paired), Holm (statsmodels' multipletests),
minimum detectable difference (statsmodels' TTestPower), exact sign-flip p (brute force over itertools.product);
and verdicts both ways: a shown direction, "equivalent (±m)", and "not shown"."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import ttost_paired

from lorasec.tasks import evidence as ev

FIXED = [
    [0.031, -0.012, 0.044, 0.018, 0.007],
    [-0.21, -0.35, -0.18, -0.40, -0.27, -0.33],
    [0.004, -0.006, 0.002, 0.001, -0.003, 0.005, -0.001],
    [0.9, -0.8, 0.1],
]


@pytest.mark.parametrize("d", FIXED)
def test_t_test_and_interval_match_scipy(d):
    s = ev.stats(d)
    ref = sps.ttest_1samp(d, 0.0)
    assert s.p == pytest.approx(ref.pvalue, rel=1e-9)
    lo, hi = ref.confidence_interval(0.95)
    assert (s.lo, s.hi) == (pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))
    assert (s.t_lo, s.t_hi) == (s.lo, s.hi)  # tables and verdicts read one interval


@pytest.mark.parametrize("d", FIXED)
@pytest.mark.parametrize("margin", [0.01, 0.02, 0.05, 0.5])
def test_tost_matches_statsmodels(d, margin):
    x = np.asarray(d)
    ref_p, _, _ = ttost_paired(x, np.zeros_like(x), -margin, margin)
    assert ev.tost_p(ev.stats(d), margin) == pytest.approx(ref_p, rel=1e-9, abs=1e-15)


def test_holm_matches_statsmodels_and_skips_untested():
    ps = [0.01, 0.04, 0.03, 0.005, 0.2, 0.5, 0.011]
    ref = multipletests(ps, alpha=0.05, method="holm")[1]
    assert ev.holm(ps) == pytest.approx(list(ref), rel=1e-12)
    with_gaps = [0.01, None, 0.04, None, 0.03]
    ref = multipletests([0.01, 0.04, 0.03], method="holm")[1]
    got = ev.holm(with_gaps)
    assert got[1] is None and got[3] is None
    assert [got[0], got[2], got[4]] == pytest.approx(list(ref), rel=1e-12)


@pytest.mark.parametrize("n,std", [(3, 0.1), (5, 0.05), (6, 0.2), (10, 1.0)])
def test_minimum_detectable_difference_matches_statsmodels(n, std):
    effect = TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8, alternative="two-sided")
    assert ev.mdd(n, std) == pytest.approx(effect * std, rel=1e-6)
    need = ev.seeds_needed(0.5 * effect * std, std)
    # the smallest n whose statsmodels power reaches 0.8 for that difference
    ref = next(k for k in range(2, 500) if TTestPower().power(0.5 * effect, k, 0.05) >= 0.8)
    assert need == ref and need > n


def test_sign_flip_p_is_brute_force():
    d = FIXED[1]
    obs = abs(np.mean(d))
    flips = [abs(np.mean([s * x for s, x in zip(signs, d, strict=True)])) for signs in
             itertools.product([1, -1], repeat=len(d))]
    assert ev.sign_flip_p(d) == pytest.approx(np.mean([f >= obs - 1e-12 for f in flips]))
    assert ev.sign_flip_p(d) == pytest.approx(2 / 64)  # all six negative: only all-minus and all-plus reach it


def test_verdicts_holds_equivalent_and_not_shown():
    down = ev.stats(FIXED[1])  # clearly below 0
    tiny = ev.stats(FIXED[2])  # within ±0.02 by TOST
    wide = ev.stats(FIXED[3])  # neither
    tests = ev.tested([down, tiny, wide], 0.02)
    subject = ("LoRA", "more robust", "less robust")
    assert ev.verdict(down, False, *subject, test=tests[0]) == "LoRA more robust"
    assert ev.claim_status(down, -1, tests[0]) == "holds" and ev.claim_status(down, +1, tests[0]) == "fails"
    assert ev.verdict(tiny, False, *subject, test=tests[1]) == "equivalent (±0.02)"
    assert ev.claim_status(tiny, -1, tests[1]) == "fails: equivalent (±0.02)"
    assert ev.verdict(wide, False, *subject, test=tests[2]) == "no difference detected"
    assert ev.claim_status(wide, -1, tests[2]) == "not shown"
    # the same tiny differences are not equivalent within a margin smaller than their spread
    strict = ev.tested([tiny], 0.002)[0]
    assert ev.verdict(tiny, False, *subject, test=strict) == "no difference detected"


def test_holm_can_take_a_verdict_away():
    """p = 0.03 alone is shown; as one of three with p = 0.03 each, Holm's adjusted p is 0.09: not shown."""
    # differences whose t-test p is close to 0.03
    d = [0.05, 0.02, 0.04, 0.01, 0.06]
    s = ev.stats(d)
    assert 0.005 < s.p < 0.05
    alone = ev.tested([s], 0.001)[0]
    assert ev.direction(s, alone) == 1
    many = ev.tested([s, s, s, s, s, s, s, s, s, s], 0.001)
    assert many[0].p_holm == pytest.approx(min(1.0, 10 * s.p))
    if 10 * s.p >= 0.05:
        assert ev.direction(s, many[0]) == 0


def test_matched_utility_needs_equivalence_not_a_wide_interval():
    util = ev.Metric("held-out NLL (nats)", lambda r: None, False, "lower held-out NLL", "higher held-out NLL",
                     margin=0.02)
    assert ev.matched(util, ev.stats(FIXED[2]), "LoRA").startswith("yes: held-out NLL (nats) equivalent within")
    assert ev.matched(util, ev.stats(FIXED[3]), "LoRA").startswith("not shown")  # interval covers 0, but wide
    worse = ev.stats([0.3, 0.25, 0.35, 0.28])
    assert ev.matched(util, worse, "LoRA").startswith("no: LoRA has higher held-out NLL")


def test_power_columns_name_the_seeds_a_paper_effect_needs():
    s = ev.stats(FIXED[0])
    cols = ev.power_columns(s, FIXED[0], effect=-0.085)
    assert cols["MDD"] == pytest.approx(ev.mdd(5, s.std))
    assert cols["seeds needed"] == ev.seeds_needed(-0.085, s.std)
    assert cols["sign-flip p"] is None  # 5 seeds: below EXACT_FROM
    assert ev.power_columns(ev.stats(FIXED[1]), FIXED[1], None)["sign-flip p"] == pytest.approx(2 / 64)


def test_theory_predictor_verdicts_rank_do_not_rank_and_undefined():
    from lorasec.tasks.theory.report import spearman_ci, with_verdicts

    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    rows = []
    for name, y in (("monotone", x ** 3), ("independent", rng.normal(size=300)), ("constant", np.ones(300))):
        rho, lo, hi = spearman_ci(x, y, n_boot=50)
        rows.append({"predictor": name, "n": 300, "rho": rho, "ci_low": lo, "ci_high": hi})
    got = {r["predictor"]: r["verdict"] for r in with_verdicts(rows, "n")}
    assert got == {"monotone": "ranks", "independent": "does not rank (|ρ| < 0.3)", "constant": "undefined (constant)"}
    # with few cells an independent predictor is "not shown", not "does not rank"
    few = [{"predictor": "p", "n": 6, "rho": 0.1, "ci_low": -0.7, "ci_high": 0.8}]
    assert with_verdicts(few, "n")[0]["verdict"] == "not shown"
    # the p of rho = 0 is Holm-adjusted over the table like every other family (statsmodels as the reference)
    ps = [r["p"] for r in rows if r["p"] is not None]
    assert [r["p (Holm)"] for r in rows if r["p"] is not None] == pytest.approx(
        list(multipletests(ps, method="holm")[1]))


def test_a_detectable_difference_inside_the_margin_says_both():
    s = ev.stats([0.004, 0.005, 0.0045, 0.0042, 0.0048])
    t = ev.tested([s], 0.02)[0]
    assert ev.verdict(s, True, "bf16", "more robust", "less robust", test=t) == "bf16 more robust, within ±0.02"


@pytest.mark.parametrize("std", [0.05, 1e-9, 1e-12, 1e-17])
def test_mdd_and_seeds_needed_hold_for_any_spread_even_float_noise(std):
    """A paired difference that is constant up to float noise (a defense that changes nothing on some seeds gives
    a std of ~1e-17) once made scipy's noncentral t return NaN and the report crash: the power depends on
    effect / std only, so the MDD scales with the std, checked against statsmodels at std 1."""
    d_unit = TTestPower().solve_power(effect_size=None, nobs=5, alpha=ev.ALPHA, power=ev.POWER,
                                      alternative="two-sided")
    assert ev.mdd(5, std) == pytest.approx(d_unit * std, rel=1e-6)
    assert ev.power(1e3 * std, 5, std) == pytest.approx(1.0)
    assert ev.seeds_needed(2 * std, std) == ev.seeds_needed(0.1, 0.05)
