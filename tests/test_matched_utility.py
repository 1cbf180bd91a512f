"""Leakage at matched held-out NLL (issue 31, P2-a: lorasec.tasks.memorization.matched): each method's budgets
trace a leakage-vs-NLL curve per seed, compared at common NLL targets by interpolation. Checked against a
brute-force recomputation (numpy.interp on each seed's points, found by scanning the rows) on fixed inputs,
with verdicts both ways: shown, equivalent, and not compared when the NLL ranges do not overlap."""

from __future__ import annotations

import numpy as np
import pytest

from lorasec.tasks.evidence import Metric
from lorasec.tasks.memorization.matched import TARGETS, matched_rows

NLL = Metric("held-out NLL (nats)", lambda r: r["nll"], False, "lower held-out NLL", "higher held-out NLL")
LEAK = Metric("leak", lambda r: r["leak"], False, "leaks less", "leaks more", margin=0.02)


def _rows(lora_nll, lora_offset, seeds=5, noise=0.002):
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(1, seeds + 1):
        for kind, nlls, offset, lrs in (("full", (3.0, 2.5, 2.0), 0.0, (1e-5, 3e-5, 1e-4)),
                                        ("lora", lora_nll, lora_offset, (1e-4, 3e-4, 1e-3))):
            for nll, lr in zip(nlls, lrs, strict=False):
                method = {"kind": kind} | ({"rank": 8} if kind == "lora" else {})
                x = nll + rng.normal(0, 0.01)
                rows.append({"key": f"{kind}-{lr}-{seed}", "config": {"task": "memorization", "method": method,
                                                                      "train": {"lr": lr}, "seed": seed},
                             "nll": x, "leak": 1.0 - 0.3 * x + offset + rng.normal(0, noise)})
    return rows


def _brute(rows, target):
    """LoRA − full leakage at `target` per seed, by scanning the rows."""
    out = []
    for seed in sorted({r["config"]["seed"] for r in rows}):
        vals = {}
        for kind in ("lora", "full"):
            pts = sorted((r["nll"], r["leak"]) for r in rows
                         if r["config"]["seed"] == seed and r["config"]["method"]["kind"] == kind)
            vals[kind] = np.interp(target, [p[0] for p in pts], [p[1] for p in pts])
        out.append(vals["lora"] - vals["full"])
    return out


def test_leakage_is_compared_at_equal_nll_and_recomputes_by_brute_force():
    rows = _rows((3.2, 2.7, 2.2), 0.05)
    got = matched_rows(rows, [LEAK, NLL], NLL)
    assert len(got) == len(TARGETS) and {r["comparison"] for r in got} == {"LoRA r=8 − full FT"}
    lo = max(min(r["nll"] for r in rows if r["config"]["seed"] == s and r["config"]["method"]["kind"] == k)
             for s in range(1, 6) for k in ("full", "lora"))
    hi = min(max(r["nll"] for r in rows if r["config"]["seed"] == s and r["config"]["method"]["kind"] == k)
             for s in range(1, 6) for k in ("full", "lora"))
    for row, q in zip(got, TARGETS, strict=True):
        target = lo + q * (hi - lo)
        assert row["held-out NLL (nats)"] == pytest.approx(target)
        assert row["diffs"] == pytest.approx(_brute(rows, target))
        assert row["difference mean"] == pytest.approx(np.mean(_brute(rows, target)))
        assert row["difference mean"] == pytest.approx(0.05, abs=0.01)
        assert row["verdict"] == "LoRA r=8 leaks more" and row["margin"] == 0.02
    assert "lr=0.0001, lr=0.0003, lr=0.001 vs lr=1e-05, lr=3e-05, lr=0.0001" == got[0]["budgets"]


def test_same_curve_is_equivalent_and_disjoint_ranges_are_not_compared():
    same = matched_rows(_rows((3.2, 2.7, 2.2), 0.0, noise=0.001), [LEAK], NLL)
    assert all(r["verdict"] == "equivalent (±0.02)" for r in same), [r["verdict"] for r in same]
    apart = matched_rows(_rows((4.5, 4.0, 3.6), 0.0), [LEAK], NLL)
    assert len(apart) == 1 and apart[0]["verdict"].startswith("not compared")
    assert apart[0]["held-out NLL (nats)"] is None


def test_the_reference_is_full_fine_tuning_without_dp():
    rows = _rows((3.2, 2.7, 2.2), 0.05)
    dp = []
    for r in rows:
        if r["config"]["method"]["kind"] == "full":  # a DP twin of every full cell, leaking much less
            cfg = {**r["config"], "method": {"kind": "full", "dp": {"target_epsilon": 8.0}}}
            dp.append(r | {"key": r["key"] + "-dp", "config": cfg, "leak": r["leak"] - 0.5})
    got = matched_rows(rows + dp, [LEAK], NLL)
    by = {}
    for r in got:
        by.setdefault(r["comparison"], []).append(r)
    assert set(by) == {"LoRA r=8 − full FT", "full FT + DP (target_epsilon=8) − full FT"}
    assert all(r["difference mean"] == pytest.approx(0.05, abs=0.01) for r in by["LoRA r=8 − full FT"])
    assert all(r["difference mean"] == pytest.approx(-0.5, abs=0.01)
               for r in by["full FT + DP (target_epsilon=8) − full FT"])
