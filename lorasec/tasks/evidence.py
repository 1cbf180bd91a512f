"""Evidence from stored cells: groups over seeds, bootstrap intervals, paired differences and verdicts.

What every task's report section uses (pure numpy, no training stack). A *group* is every cell whose config
is the same but for the seed; a *comparison* is a method against the reference method on the same data,
attack and seed (LoRA - full), so seed-to-seed noise shared by both cancels in the difference.

Rules, stated once in the report: std is the sample standard deviation (ddof=1); the 95% interval is the
percentile bootstrap of the mean over seeds; a verdict needs at least MIN_SEEDS paired seeds and both that
interval and Student's t interval of the mean to exclude 0, otherwise "no difference detected" (or "n=1: no
verdict"). With 3-5 seeds the percentile bootstrap is too narrow (at n = 3 it excludes 0 whenever the three
differences share a sign); the t interval is the classical paired test and keeps a verdict honest there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import t as student_t

MIN_SEEDS = 3  # a percentile bootstrap over two values is just their range: no verdict below three
N_BOOT = 4000
CI_LEVEL = 0.95
BOOT_SEED = 0  # the report is a pure function of the store: the same store gives the same intervals


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"method": {"kind": "lora", "rank": 8}} -> {"method.kind": "lora", "method.rank": 8}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def frozen(flat: dict[str, Any], drop: Callable[[str], bool] = lambda k: False) -> tuple[tuple[str, str], ...]:
    """A hashable, order-free key of a flattened config without the fields `drop` says."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in flat.items() if not drop(k)))


@dataclass(frozen=True)
class Stats:
    """Mean, sample std (ddof=1), 95% percentile-bootstrap interval and Student's t interval of the mean."""

    n: int
    mean: float | None
    std: float | None
    lo: float | None
    hi: float | None
    t_lo: float | None = None
    t_hi: float | None = None

    def spans_zero(self) -> bool:
        """Whether either interval contains 0 (a verdict needs both to exclude it)."""
        return any(a is None or b is None or a <= 0 <= b for a, b in ((self.lo, self.hi), (self.t_lo, self.t_hi)))


def bootstrap_ci(values: Sequence[float], n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: resample the values with replacement n_boot times."""
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    tail = (1 - CI_LEVEL) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def stats(values: Iterable[float | None]) -> Stats:
    """Stats of the values that are present (None and NaN are skipped and not counted)."""
    x = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not x:
        return Stats(0, None, None, None, None)
    mean = float(np.mean(x))
    if len(x) == 1:
        return Stats(1, mean, None, None, None)
    lo, hi = bootstrap_ci(x)
    std = float(np.std(x, ddof=1))
    half = float(student_t.ppf((1 + CI_LEVEL) / 2, len(x) - 1)) * std / math.sqrt(len(x))
    return Stats(len(x), mean, std, lo, hi, mean - half, mean + half)


def stat_columns(prefix: str, s: Stats) -> dict[str, Any]:
    """Table columns of one statistic: `prefix mean`, `prefix std`, `prefix CI low`, `prefix CI high`."""
    return {f"{prefix} mean": s.mean, f"{prefix} std": s.std, f"{prefix} CI low": s.lo, f"{prefix} CI high": s.hi}


def difference_columns(s: Stats) -> dict[str, Any]:
    """The columns of a paired difference: its statistics and both intervals a verdict reads."""
    return stat_columns("difference", s) | {"difference t-CI low": s.t_lo, "difference t-CI high": s.t_hi}


# --- groups over seeds -------------------------------------------------------------------------------------


@dataclass
class Group:
    """Cells with one config but for the seed."""

    config: dict[str, Any]  # flattened, without seed
    rows: list[dict] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [r["config"]["seed"] for r in self.rows]

    @property
    def keys(self) -> list[str]:
        return [r["key"] for r in self.rows]

    def stats(self, value: Callable[[dict], float | None]) -> Stats:
        return stats(value(r) for r in self.rows)


def groups(rows: Iterable[dict]) -> list[Group]:
    """Group stored results by every config field except `seed`; rows in a group are sorted by seed."""
    out: dict[tuple, Group] = {}
    for r in rows:
        flat = flatten(r["config"])
        flat.pop("seed", None)
        out.setdefault(frozen(flat), Group(flat)).rows.append(r)
    for g in out.values():
        g.rows.sort(key=lambda r: r["config"]["seed"])
    return list(out.values())


def varying(configs: Iterable[dict[str, Any]]) -> list[str]:
    """Flattened fields whose value differs between the configs (what tells groups apart), sorted."""
    configs = list(configs)
    fields = sorted({k for c in configs for k in c})
    return [k for k in fields if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def describe(flat: dict[str, Any], fields: Iterable[str]) -> str:
    """`attack.kind=prefix, attack.rate=0.01` for the given fields (None values left out)."""
    parts = []
    for k in fields:
        v = flat.get(k)
        if v is None:
            continue
        parts.append(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


# --- the method as the compared variable (both shipped tasks compare fine-tuning methods) ---


def is_treatment(field: str) -> bool:
    """The compared variable: the method and its learning rate (papers set the rate per method)."""
    return field.startswith("method.") or field == "train.lr"


def is_reference(treatment: dict[str, Any]) -> bool:
    return treatment.get("method.kind") == "full"


SUBJECT = {"full": "full FT", "lora": "LoRA", "head_only": "head-only"}


def shown_fields(configs: list[dict[str, Any]]) -> list[str]:
    """Treatment fields worth naming in a method's label: those that vary among cells of the same method kind."""
    by_kind: dict[Any, list[dict]] = {}
    for c in configs:
        by_kind.setdefault(c.get("method.kind"), []).append(c)
    return sorted({f for cs in by_kind.values() for f in varying(cs) if is_treatment(f)})


def method_label(flat: dict[str, Any], shown: list[str]) -> str:
    """`LoRA r=8`, `full FT`, `LoRA r=8 (init_scale=0.1)`; `shown` are the treatment fields that vary."""
    kind = flat.get("method.kind")
    name = SUBJECT.get(kind, str(kind)) + (f" r={flat.get('method.rank')}" if kind == "lora" else "")
    extra = describe(flat, [f for f in shown if f not in ("method.kind", "method.rank")])
    return f"{name} ({extra.replace('method.', '').replace('train.', '')})" if extra else name


# --- paired comparisons ------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """One treatment against the reference on the same context, paired by seed: diffs[i] = value(treated) -
    value(reference) on seeds[i]."""

    context: dict[str, Any]  # flattened config shared by both sides, without seed and the treatment fields
    treated: dict[str, Any]  # the treatment fields of each side
    reference: dict[str, Any]
    seeds: list[int]
    diffs: list[float]
    keys: list[tuple[str, str]]  # (treated key, reference key) per seed
    stats: Stats


def paired(rows: Iterable[dict], value: Callable[[dict], float | None], is_treatment: Callable[[str], bool],
           is_reference: Callable[[dict[str, Any]], bool]) -> list[Comparison]:
    """Pair every non-reference treatment with every reference treatment in the same context and seed.

    `is_treatment(field)` says which flattened config fields make the compared variable (e.g. `method.*` and
    the learning rate, which papers set per method); everything else, and the seed, must be equal for two
    cells to pair. Cells where `value` is None are skipped.
    """
    cells: dict[tuple, dict[tuple, dict[int, dict]]] = {}  # context -> treatment -> seed -> row
    meta: dict[tuple, tuple[dict, dict]] = {}
    for r in rows:
        if value(r) is None:
            continue
        flat = flatten(r["config"])
        seed = flat.pop("seed")
        ctx = frozen(flat, drop=is_treatment)
        treat = {k: v for k, v in flat.items() if is_treatment(k)}
        tkey = frozen(treat)
        cells.setdefault(ctx, {}).setdefault(tkey, {})[seed] = r
        meta[ctx] = ({k: v for k, v in flat.items() if not is_treatment(k)}, meta.get(ctx, ({}, {}))[1])
        meta[(ctx, tkey)] = (treat, {})
    out = []
    for ctx, by_treat in cells.items():
        refs = [t for t in by_treat if is_reference(meta[(ctx, t)][0])]
        for ref in refs:
            for t, by_seed in by_treat.items():
                if t in refs:
                    continue
                common = sorted(set(by_seed) & set(by_treat[ref]))
                if not common:
                    continue
                diffs = [float(value(by_seed[s])) - float(value(by_treat[ref][s])) for s in common]  # type: ignore[arg-type]
                keys = [(by_seed[s]["key"], by_treat[ref][s]["key"]) for s in common]
                out.append(Comparison(meta[ctx][0], meta[(ctx, t)][0], meta[(ctx, ref)][0], common, diffs, keys,
                                      stats(diffs)))
    return out


NO_VERDICT_N1 = "n=1: no verdict"


def direction(s: Stats) -> int:
    """+1 when the interval of the paired difference lies above 0, -1 below, 0 when it spans 0 or n is too small."""
    if s.n < MIN_SEEDS or s.spans_zero():
        return 0
    return 1 if (s.mean or 0) > 0 else -1


def verdict(s: Stats, higher_is_better: bool, subject: str, better: str, worse: str) -> str:
    """`LoRA more robust` / `LoRA less robust` / `no difference detected` from the paired difference."""
    if s.n == 0:
        return "no pairs"
    if s.n == 1:
        return NO_VERDICT_N1
    if s.n < MIN_SEEDS:
        return f"n={s.n}: too few seeds for a verdict"
    d = direction(s)
    if d == 0:
        return "no difference detected"
    return f"{subject} {better if (d > 0) == higher_is_better else worse}"


def claim_status(s: Stats, claimed: int | None) -> str:
    """Against a claim on the sign of the difference (+1: treated higher, -1: lower): 'holds' when the interval
    shows that sign, 'fails' when it shows the opposite, 'not shown' otherwise; '' when there is no claim."""
    if not claimed:
        return ""
    d = direction(s)
    return "not shown" if d == 0 else "holds" if d == claimed else "fails"


def subject_of(c: Comparison) -> str:
    """How a finding names the treated method: "LoRA", "head-only", ..."""
    kind = c.treated.get("method.kind")
    return SUBJECT.get(kind, str(kind))


def finding_columns(c: Comparison, shown: list[str], metric: str, higher_is_better: bool, better: str, worse: str,
                    claim: str, claim_sign: int | None, paper: str) -> dict[str, Any]:
    """The columns every task's findings share: the comparison, its paired difference with both intervals, the
    verdict, and the paper's claim (made about LoRA) with whether our interval shows it."""
    claimed = claim_sign if c.treated.get("method.kind") == "lora" else None
    return {
        "comparison": f"{method_label(c.treated, shown)} − {method_label(c.reference, shown)}",
        "metric": metric,
        "n": c.stats.n,
        **difference_columns(c.stats),
        "verdict": verdict(c.stats, higher_is_better, subject_of(c), better, worse),
        "paper claim": f"{claim} ({paper})" if claimed else "",
        "claim": claim_status(c.stats, claimed),
    }


def cell_columns(c: Comparison) -> dict[str, Any]:
    """The seeds and cell keys behind a finding (`lorasec show KEY`)."""
    return {"seeds": c.seeds, "cells": [k for pair in c.keys for k in pair]}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which points no other point beats on both axes (both lower is better), ties kept."""
    flags = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i)
        flags.append(not dominated)
    return flags


def roc_curve(members: Sequence[float], nonmembers: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """FPR and TPR at every threshold (higher score = member), starting at (0, 0): members are positives."""
    scores = np.concatenate([np.asarray(members, float), np.asarray(nonmembers, float)])
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # the last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = np.cumsum(1 - y)[last]
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]
