"""Evidence from stored cells: groups over seeds, bootstrap intervals, paired differences and verdicts.

What every task's report section uses (pure numpy, no training stack). A *group* is every cell whose config
is the same but for the seed; a *comparison* is a treated side against the reference side on the same
everything else and seed (LoRA - full, defended - undefended), so seed-to-seed noise shared by both cancels in
the difference. What is compared is declared as data (`Comparing`: treatment fields, reference values, metrics
with direction and claims); the tasks' report modules hold their declarations.

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


# --- comparisons declared as data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A published claim on the sign of a paired difference (+1: the treated side higher, -1: lower), made about
    the treated sides whose fields match `about` (paper 1's claims are about LoRA: {"method.kind": "lora"})."""

    sign: int
    text: str
    source: str
    about: dict[str, Any] = field(default_factory=dict)

    def covers(self, treated: dict[str, Any]) -> bool:
        return all(treated.get(k) == v for k, v in self.about.items())


def _always(row: dict) -> bool:
    return True


@dataclass(frozen=True)
class Metric:
    """One number read off a stored row, with its direction and words. `applies` says which rows it is read on,
    by what the row holds (ASR only where the row has triggered-test metrics, whatever the attack is called);
    a row where `value` is None is skipped as well."""

    name: str
    value: Callable[[dict], float | None]
    higher_is_better: bool
    better: str  # "more robust": said of the treated side when the difference favours it
    worse: str
    applies: Callable[[dict], bool] = _always
    claims: tuple[Claim, ...] = ()

    def claim_for(self, treated: dict[str, Any]) -> Claim | None:
        return next((c for c in self.claims if c.covers(treated)), None)


def field_matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether a flattened field is one of `patterns`: a pattern ending in "." is a prefix (`method.`)."""
    return any(name.startswith(p) if p.endswith(".") else name == p for p in patterns)


@dataclass(frozen=True)
class Comparing:
    """A comparison declared as data: which config fields make the compared variable (the treatment), which
    values are the reference side, and the metrics read on it. Pairing, verdicts, tables and figures read only
    this; "method vs method" is one declaration, "defended vs undefended" another (tasks/*/report.py).

    Two cells pair when every other field and the seed are equal. `utility`, when set, is paired beside every
    other metric and says whether the two sides reached the same utility (`matched utility`). `label` names one
    side in a table and `subject` the treated side in a verdict; by default both describe the treatment fields
    that vary (`defense.kind=keyword`). `extra` adds task columns to a finding (the paper's numbers)."""

    name: str
    fields: tuple[str, ...]
    reference: dict[str, Any]
    metrics: tuple[Metric, ...]
    utility: Metric | None = None
    label: Callable[[dict[str, Any], list[str]], str] | None = None
    subject: Callable[[dict[str, Any]], str] | None = None
    shown: Callable[[list[dict[str, Any]]], list[str]] | None = None
    extra: Callable[[Comparison], dict[str, Any]] | None = None

    def is_treatment(self, name: str) -> bool:
        return field_matches(name, self.fields)

    def is_reference(self, treatment: dict[str, Any]) -> bool:
        return all(treatment.get(k) == v for k, v in self.reference.items())

    def shown_fields(self, configs: list[dict[str, Any]]) -> list[str]:
        """The treatment fields worth naming in a side's label."""
        if self.shown:
            return self.shown(configs)
        return [f for f in varying(configs) if self.is_treatment(f)]

    def side(self, flat: dict[str, Any], shown: list[str]) -> str:
        if self.label:
            return self.label(flat, shown)
        return describe(flat, [f for f in shown if self.is_treatment(f)]) or self.name

    def subject_of(self, c: Comparison, shown: list[str]) -> str:
        return self.subject(c.treated) if self.subject else self.side(c.treated, shown)

    def pairs(self, rows: Iterable[dict], metric: Metric) -> list[Comparison]:
        return paired([r for r in rows if metric.applies(r)], metric.value, self.is_treatment, self.is_reference)


def parse_value(text: str) -> Any:
    """A reference value from the command line: JSON when it parses (`8`, `0.5`, `null`, `true`), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def declare(field_name: str, reference: Any, metrics: Sequence[Metric], utility: Metric | None = None) -> Comparing:
    """A study-level comparison on one field (`lorasec report --compare train.precision=fp32`): the task's metrics
    without the paper's claims, which were made about something else."""
    plain = tuple(Metric(m.name, m.value, m.higher_is_better, m.better, m.worse, m.applies) for m in metrics)
    return Comparing(field_name, (field_name,), {field_name: reference}, plain, utility)


# --- the method as the compared variable (both shipped tasks compare fine-tuning methods) ---


SUBJECT = {"full": "full FT", "lora": "LoRA", "head_only": "head-only"}
METHOD_FIELDS = ("method.", "train.lr")  # the method and its learning rate (papers set the rate per method)


def shown_fields(configs: list[dict[str, Any]]) -> list[str]:
    """Treatment fields worth naming in a method's label: those that vary among cells of the same method kind."""
    by_kind: dict[Any, list[dict]] = {}
    for c in configs:
        by_kind.setdefault(c.get("method.kind"), []).append(c)
    return sorted({f for cs in by_kind.values() for f in varying(cs) if field_matches(f, METHOD_FIELDS)})


def method_label(flat: dict[str, Any], shown: list[str]) -> str:
    """`LoRA r=8`, `full FT`, `LoRA r=8 (init_scale=0.1)`; `shown` are the treatment fields that vary."""
    kind = flat.get("method.kind")
    name = SUBJECT.get(kind, str(kind)) + (f" r={flat.get('method.rank')}" if kind == "lora" else "")
    extra = describe(flat, [f for f in shown if f not in ("method.kind", "method.rank")])
    return f"{name} ({extra.replace('method.', '').replace('train.', '')})" if extra else name


def method_subject(treated: dict[str, Any]) -> str:
    """How a finding names the treated method: "LoRA", "head-only", ..."""
    kind = treated.get("method.kind")
    return SUBJECT.get(kind, str(kind))


def method_comparison(metrics: Sequence[Metric], utility: Metric | None = None,
                      extra: Callable[[Comparison], dict[str, Any]] | None = None) -> Comparing:
    """Each method against full fine-tuning on the same data, attack and seed."""
    return Comparing("method", METHOD_FIELDS, {"method.kind": "full"}, tuple(metrics), utility, label=method_label,
                     subject=method_subject, shown=shown_fields, extra=extra)


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


def matched(utility: Metric, s: Stats, subject: str) -> str:
    """Whether the two sides reached the same utility: a side that leaks less only because it learned less is
    not a finding."""
    if s.n < MIN_SEEDS:
        return f"n={s.n}: utility not compared"
    d = direction(s)
    worse = d != 0 and (d > 0) != utility.higher_is_better
    if worse:
        return f"no: {subject} has {utility.worse} (learned less): leakage not compared at matched utility"
    if d:
        return f"yes, and {subject} also has {utility.better}"
    return f"yes: {utility.name} difference spans 0"


def finding_columns(decl: Comparing, c: Comparison, shown: list[str], metric: Metric) -> dict[str, Any]:
    """The columns every finding has: the comparison, its paired difference with both intervals, the verdict,
    and the claim attached to the metric (when it is about the treated side) with whether our interval shows
    it."""
    claim = metric.claim_for(c.treated)
    return {
        "comparison": f"{decl.side(c.treated, shown)} − {decl.side(c.reference, shown)}",
        "metric": metric.name,
        "n": c.stats.n,
        **difference_columns(c.stats),
        "verdict": verdict(c.stats, metric.higher_is_better, decl.subject_of(c, shown), metric.better, metric.worse),
        "paper claim": f"{claim.text} ({claim.source})" if claim else "",
        "claim": claim_status(c.stats, claim.sign if claim else None),
    }


def _side_key(c: Comparison) -> tuple:
    return frozen(c.treated), frozen(c.reference), frozen(c.context)


def findings(rows: list[dict], comparisons: Sequence[Comparing],
             setting: Callable[[Comparing, Comparison, list[str]], str]) -> tuple[list[dict], list[Comparison]]:
    """One row per (declaration, metric, paired comparison), in that order, comparisons sorted by setting and
    side; `setting(decl, c, context_fields)` names what is held equal. The rows and the comparisons behind them."""
    all_flat = [flatten(r["config"]) for r in rows]
    out, comps = [], []
    for decl in comparisons:
        shown = decl.shown_fields(all_flat)
        ctx_fields = [f for f in varying(all_flat) if not decl.is_treatment(f) and f != "seed"]
        util = {_side_key(c): c for c in decl.pairs(rows, decl.utility)} if decl.utility else {}
        for metric in decl.metrics:
            found = sorted(((setting(decl, c, ctx_fields), decl.side(c.treated, shown), i, c)
                            for i, c in enumerate(decl.pairs(rows, metric))), key=lambda t: t[:3])
            for where, _, _, c in found:
                row = {"setting": where, **finding_columns(decl, c, shown, metric)}
                if decl.utility is not None:
                    u = util.get(_side_key(c))
                    row["matched utility"] = matched(decl.utility, u.stats, decl.subject_of(c, shown)) \
                        if u and metric is not decl.utility else ""
                if decl.extra:
                    row |= decl.extra(c)
                out.append(row | cell_columns(c))
                comps.append(c)
    return out, comps


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
