"""Leakage compared at matched utility (issue 31, P2-a): each method is run at several budgets (learning rates,
epochs or steps), so per seed it traces a curve of leakage against held-out NLL; the curves are compared at equal
held-out NLL, by linear interpolation between a method's own budgets, not at one learning rate each.

Per (method, context, seed) the points (held-out NLL, leakage) of its budgets are sorted by NLL and interpolated
(`numpy.interp`); the NLL targets are three points (quartiles and midpoint) of the range every seed of both
methods covers, so no value is extrapolated. At each target the per-seed differences (method − full fine-tuning)
are tested like every other finding: t interval, Holm over the family (one metric, all targets and contexts),
TOST at the metric's margin. Where the methods' NLL ranges do not overlap, the row says so and draws nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lorasec.tasks.evidence import (
    Metric,
    config_fields,
    describe,
    frozen,
    margin_of,
    method_label,
    stat_columns,
    stats,
    tested,
    varying,
    verdict,
)

BUDGET_FIELDS = ("train.lr", "train.epochs", "train.steps")
TARGETS = (0.25, 0.5, 0.75)  # where in the common NLL range the methods are compared


def _is_method(f: str) -> bool:
    return f.startswith("method.")


def curves(rows: Sequence[dict], utility: Metric, metric: Metric) -> dict[tuple, dict[int, list[tuple]]]:
    """(context, method) -> seed -> [(utility, leakage, budget, key)] over the budgets that cell was run at."""
    out: dict[tuple, dict[int, list[tuple]]] = {}
    for r in rows:
        if not metric.applies(r):
            continue
        u, v = utility.value(r), metric.value(r)
        if u is None or v is None or not np.isfinite(u) or not np.isfinite(v):
            continue
        flat = config_fields(r["config"])
        seed = flat.pop("seed")
        budget = tuple((f, flat.pop(f)) for f in BUDGET_FIELDS if f in flat)
        ctx = frozen({k: x for k, x in flat.items() if not _is_method(k)})
        arm = frozen({k: x for k, x in flat.items() if _is_method(k)})
        out.setdefault((ctx, arm), {}).setdefault(seed, []).append((float(u), float(v), budget, r["key"]))
    return out


def common_range(per_seed: Sequence[dict[int, list[tuple]]], seeds: Sequence[int]) -> tuple[float, float] | None:
    """The NLL interval every seed of every arm covers with at least two budgets; None when it is empty."""
    lo, hi = -np.inf, np.inf
    for arm in per_seed:
        for s in seeds:
            us = [p[0] for p in arm[s]]
            lo, hi = max(lo, min(us)), min(hi, max(us))
    return (float(lo), float(hi)) if lo < hi else None


def at(points: list[tuple], target: float) -> float:
    """Leakage at held-out NLL `target`, linear between the two budgets around it."""
    pts = sorted(points)
    return float(np.interp(target, [p[0] for p in pts], [p[1] for p in pts]))


def matched_rows(rows: Sequence[dict], metrics: Sequence[Metric], utility: Metric) -> list[dict]:
    """One row per (metric, context, method other than full fine-tuning, NLL target)."""
    out: list[dict] = []
    flats = [config_fields(r["config"]) for r in rows]
    ctx_fields = [f for f in varying(flats) if not _is_method(f) and f not in BUDGET_FIELDS and f != "seed"]
    shown = [f for f in varying(flats) if _is_method(f)]
    for metric in metrics:
        if metric is utility:
            continue
        cv = curves(rows, utility, metric)
        family: list[dict] = []
        for (ctx, arm), by_seed in sorted(cv.items()):
            arm_flat = {k: _load(v) for k, v in arm}
            if _is_reference(arm_flat):
                continue
            ref = next((b for (c, a), b in cv.items() if c == ctx and _is_reference({k: _load(v) for k, v in a})),
                       None)
            if ref is None:
                continue
            seeds = sorted(s for s in set(by_seed) & set(ref) if len(by_seed[s]) >= 2 and len(ref[s]) >= 2)
            if len(seeds) < 2:
                continue
            ctx_flat = {k: _load(v) for k, v in ctx}
            base = {"setting": describe(ctx_flat, ctx_fields) or "all cells",
                    "comparison": f"{method_label(arm_flat, shown)} − full FT", "metric": metric.name,
                    "budgets": _budgets(by_seed, ref, seeds)}
            span = common_range([by_seed, ref], seeds)
            if span is None:
                out.append(base | {"held-out NLL (nats)": None, "n": len(seeds),
                                   "verdict": "not compared: the methods' held-out NLL ranges do not overlap"})
                continue
            for q in TARGETS:
                target = span[0] + q * (span[1] - span[0])
                diffs = [at(by_seed[s], target) - at(ref[s], target) for s in seeds]
                family.append(base | {"held-out NLL (nats)": target, "n": len(seeds), "_stats": stats(diffs),
                                      "diffs": diffs, "subject": method_label(arm_flat, shown),
                                      "cells": sorted(p[3] for s in seeds for p in by_seed[s] + ref[s])})
        tests = tested([f["_stats"] for f in family], margin_of(metric))
        for f, t in zip(family, tests, strict=True):
            s = f.pop("_stats")
            out.append(f | {**stat_columns("difference", s), "p (Holm)": t.p_holm, "margin": margin_of(metric),
                            "TOST p (Holm)": t.tost_holm,
                            "verdict": verdict(s, metric.higher_is_better, f.pop("subject"), metric.better,
                                               metric.worse, t)})
    return out


def _is_reference(method: dict[str, Any]) -> bool:
    """Full fine-tuning without DP: what every other method is compared with."""
    return method.get("method.kind") == "full" and not any(k.startswith("method.dp") for k in method)


def _load(v: str) -> Any:
    import json

    return json.loads(v)


def _budgets(by_seed: dict[int, list[tuple]], ref: dict[int, list[tuple]], seeds: list[int]) -> str:
    def names(b: dict[int, list[tuple]]) -> str:
        budgets = sorted({tuple((k, v) for k, v in p[2] if v is not None) for s in seeds for p in b[s]},
                         key=lambda t: [v for _, v in t])
        return ", ".join("/".join(f"{k.removeprefix('train.')}={v:g}" for k, v in t) for t in budgets)
    return f"{names(by_seed)} vs {names(ref)}"
