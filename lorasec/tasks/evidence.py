"""Evidence from stored cells: groups over seeds, bootstrap intervals, paired differences and verdicts.

What every task's report section uses (pure numpy, no training stack). A *group* is every cell whose config
is the same but for the seed; a *comparison* is a treated side against the reference side on the same
everything else and seed (LoRA - full, defended - undefended), so seed-to-seed noise shared by both cancels in
the difference. What is compared is declared as data (`Comparing`: treatment fields, reference values, metrics
with direction and claims); the tasks' report modules hold their declarations.

Rules, stated once in the report: std is the sample standard deviation (ddof=1); the interval a verdict uses,
and the one tables show, is Student's t interval of the mean (95%). Each finding carries the two-sided paired
t-test p, TOST p against the metric's equivalence margin, both Holm-adjusted over the finding's family (one
declaration x one metric in one report: every setting, rate and rank it is read on), and the minimum detectable
difference (MDD: the true difference a two-sided paired t-test at alpha = 0.05 finds with 80% power, with the
observed std). Verdict: the direction when the adjusted t-test p < 0.05; "equivalent (±m)" when the adjusted
TOST p < 0.05; otherwise "not shown" with the MDD (and, where a paper's effect is known, the seeds it would take).
From 6 seeds the exact sign-flip (permutation) p is shown beside the t-test's. Fewer than MIN_SEEDS paired
seeds: no verdict.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.stats import nct
from scipy.stats import t as student_t

MIN_SEEDS = 3  # a t-test on two differences has one degree of freedom: no verdict below three
CI_LEVEL = 0.95
ALPHA = 0.05  # the level of every test, after Holm's adjustment within a family
POWER = 0.8  # the power the minimum detectable difference is stated at
EXACT_FROM = 6  # from this many paired seeds the exact sign-flip test is shown beside the t-test
MAX_SEEDS_NEEDED = 1000  # "seeds needed" is searched up to this many


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


def config_fields(config: dict) -> dict[str, Any]:
    """A stored config, flattened, without the `key: if_set` fields at their defaults (lorasec.config.if_set_defaults):
    a row stored before such a field existed and one stored after it, at its default, are the same cell."""
    from lorasec.config import if_set_defaults

    quiet = if_set_defaults()
    return {k: v for k, v in flatten(config).items()
            if not (k.rsplit(".", 1)[-1] in quiet and v == quiet[k.rsplit(".", 1)[-1]])}


def frozen(flat: dict[str, Any], drop: Callable[[str], bool] = lambda k: False) -> tuple[tuple[str, str], ...]:
    """A hashable, order-free key of a flattened config without the fields `drop` says."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in flat.items() if not drop(k)))


@dataclass(frozen=True)
class Stats:
    """Mean, sample std (ddof=1), Student's 95% t interval of the mean (lo/hi; t_lo/t_hi name the same interval),
    and the two-sided t-test p of mean 0."""

    n: int
    mean: float | None
    std: float | None
    lo: float | None  # the t interval: what tables, figures and verdicts read
    hi: float | None
    p: float | None = None  # two-sided one-sample (paired) t-test of mean 0

    @property
    def t_lo(self) -> float | None:
        return self.lo

    @property
    def t_hi(self) -> float | None:
        return self.hi

    def mdd(self) -> float | None:
        """Minimum detectable difference at these seeds (see `mdd`)."""
        return mdd(self.n, self.std)


RULES = (
    "cells are grouped by every config field except the seed; n is the number of seeds. *std* is the sample "
    "standard deviation (ddof=1); every interval is Student's 95% t interval of the mean over seeds (no "
    "percentile bootstrap: at 3-5 seeds it is too narrow). A comparison pairs two sides of a declared variable "
    "(the method, a defense, a `--compare` field) on the same everything else and seed and tests the per-seed "
    f"differences: the two-sided paired t-test, and a TOST of equivalence within the metric's margin (*margin*); "
    "both p-values are Holm-adjusted within the finding's *family* (one declared comparison x one metric in this "
    f"report: all its settings, rates and ranks). A verdict needs n ≥ {MIN_SEEDS}: the direction when the "
    f"adjusted t-test p < {ALPHA}, *equivalent (±margin)* when the adjusted TOST p < {ALPHA}, else *no difference "
    f"detected*. *MDD* is the smallest true difference the t-test would detect with {POWER:.0%} power at these "
    "seeds (observed std); *seeds needed* is how many seeds would detect the paper's effect (or, with no paper "
    f"number, the observed mean) with that power. From {EXACT_FROM} seeds the exact sign-flip p is shown too.")


def stats(values: Iterable[float | None]) -> Stats:
    """Stats of the values that are present (None and NaN are skipped and not counted)."""
    x = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not x:
        return Stats(0, None, None, None, None)
    mean = float(np.mean(x))
    if len(x) == 1:
        return Stats(1, mean, None, None, None)
    std = float(np.std(x, ddof=1))
    se = std / math.sqrt(len(x))
    half = float(student_t.ppf((1 + CI_LEVEL) / 2, len(x) - 1)) * se
    p = float(2 * student_t.sf(abs(mean) / se, len(x) - 1)) if se > 0 else (1.0 if mean == 0 else 0.0)
    return Stats(len(x), mean, std, mean - half, mean + half, p)  # no percentile bootstrap at a handful of seeds


def tost_p(s: Stats, margin: float) -> float | None:
    """Two one-sided t-tests of equivalence within ±margin (Schuirmann): p = max(p_lower, p_upper); None for n < 2.
    Zero spread: 0 when |mean| < margin, else 1."""
    if s.n < 2 or s.mean is None or s.std is None:
        return None
    se = s.std / math.sqrt(s.n)
    if se == 0:
        return 0.0 if abs(s.mean) < margin else 1.0
    df = s.n - 1
    p_lower = float(student_t.sf((s.mean + margin) / se, df))  # H0: mean <= -margin
    p_upper = float(student_t.cdf((s.mean - margin) / se, df))  # H0: mean >= +margin
    return max(p_lower, p_upper)


def power(effect: float, n: int, std: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided one-sample t-test at level alpha to detect a true mean `effect` with n values of
    std `std` (the noncentral t, as statsmodels' TTestPower computes it)."""
    df = n - 1
    crit = float(student_t.ppf(1 - alpha / 2, df))
    nc = effect / (std / math.sqrt(n))
    p = float(nct.sf(crit, df, nc) + nct.cdf(-crit, df, nc))
    if math.isfinite(p):
        return p
    # scipy's noncentral t gives NaN far in the tail (|nc| ~ 1e12, a std of 1e-12 from float noise): there the
    # power is 1 to double precision, as the normal limit says
    return float(student_t.sf(crit - abs(nc), df) + student_t.cdf(-crit - abs(nc), df))


def mdd(n: int, std: float | None, alpha: float = ALPHA, target: float = POWER) -> float | None:
    """The smallest true difference a two-sided paired t-test at `alpha` detects with power `target` at n seeds,
    taking the observed std as the truth; None below 2 seeds or without spread. Power depends on effect / std only,
    so it is solved in units of std (any std, however small, gets the same relative precision)."""
    if n < 2 or std is None or std == 0:
        return None
    hi = 1.0
    while power(hi, n, 1.0, alpha) < target:
        hi *= 2
    return std * float(brentq(lambda d: power(d, n, 1.0, alpha) - target, 0.0, hi, xtol=1e-12))


def seeds_needed(effect: float, std: float | None, alpha: float = ALPHA, target: float = POWER) -> int | None:
    """The fewest seeds at which a true difference `effect` is detected with power `target` (observed std as the
    truth); None without spread, or when it takes more than MAX_SEEDS_NEEDED."""
    if std is None or std == 0 or effect == 0:
        return None
    for n in range(2, MAX_SEEDS_NEEDED + 1):
        if power(abs(effect) / std, n, 1.0, alpha) >= target:
            return n
    return None


def sign_flip_p(diffs: Sequence[float]) -> float:
    """Exact two-sided sign-flip (paired permutation) p of mean 0: the share of the 2^n sign patterns whose |mean|
    is at least the observed one."""
    x = np.asarray(diffs, dtype=float)
    n = x.size
    signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
    means = np.abs((signs * x).mean(axis=1))
    return float(np.mean(means >= abs(x.mean()) - 1e-12))


def holm(ps: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None entries are not tested and stay None)."""
    idx = [i for i, p in enumerate(ps) if p is not None]
    order = sorted(idx, key=lambda i: ps[i])  # type: ignore[arg-type, return-value]
    m = len(order)
    out: list[float | None] = [None] * len(ps)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(ps[i])))  # type: ignore[arg-type]
        out[i] = running
    return out


def stat_columns(prefix: str, s: Stats) -> dict[str, Any]:
    """Table columns of one statistic: `prefix mean`, `prefix std`, and its 95% t interval as `prefix CI low`,
    `prefix CI high` (the interval a verdict uses)."""
    return {f"{prefix} mean": s.mean, f"{prefix} std": s.std, f"{prefix} CI low": s.lo, f"{prefix} CI high": s.hi}


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
        flat = config_fields(r["config"])
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
    effect: float | None = None  # the paper's difference (treated - reference), for "seeds needed"

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
    margin: float = 0.02  # equivalence margin (TOST), in the metric's own units

    def claim_for(self, treated: dict[str, Any]) -> Claim | None:
        return next((c for c in self.claims if c.covers(treated)), None)


_MARGINS: ContextVar[dict[str, float] | None] = ContextVar("margins", default=None)
_MATCHED: ContextVar[set[str] | None] = ContextVar("margins_matched", default=None)


@contextlib.contextmanager
def margins(overrides: dict[str, float]) -> Iterator[set[str]]:
    """Equivalence margins set by the reader (`lorasec report --margin NAME=VALUE`) while a report is built: a
    metric whose name contains NAME (case-insensitive) is tested at VALUE instead of its declared margin. Yields
    the names that matched some metric."""
    matched: set[str] = set()
    t1, t2 = _MARGINS.set(dict(overrides)), _MATCHED.set(matched)
    try:
        yield matched
    finally:
        _MARGINS.reset(t1)
        _MATCHED.reset(t2)


def margin_of(metric: Metric) -> float:
    """The margin `metric` is tested at: the reader's override when one names it, else the metric's own."""
    for name, value in (_MARGINS.get() or {}).items():
        if name.lower() in metric.name.lower():
            matched = _MATCHED.get()
            if matched is not None:
                matched.add(name)
            return value
    return metric.margin


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
    # fields matched by `fields` that are context all the same (DP settings, when the method is compared)
    excluded: tuple[str, ...] = ()

    def is_treatment(self, name: str) -> bool:
        return field_matches(name, self.fields) and not field_matches(name, self.excluded)

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


def without_claims(metrics: Sequence[Metric]) -> tuple[Metric, ...]:
    """The metrics without the papers' claims (a comparison the papers did not make)."""
    return tuple(Metric(m.name, m.value, m.higher_is_better, m.better, m.worse, m.applies, margin=m.margin)
                 for m in metrics)


def declare(reference: Sequence[tuple[str, Any]], metrics: Sequence[Metric], utility: Metric | None = None
            ) -> Comparing:
    """A study-level comparison on one or more fields that move together (`lorasec report --compare
    train.precision=fp32,train.optimizer=adamw`), against their reference values: the task's metrics without the
    paper's claims, which were made about something else."""
    ref = dict(reference)
    return Comparing(", ".join(ref), tuple(ref), ref, without_claims(metrics), utility)


# --- the method as the compared variable (both shipped tasks compare fine-tuning methods) ---


SUBJECT = {"full": "full FT", "lora": "LoRA", "head_only": "head-only"}
METHOD_FIELDS = ("method.", "train.lr")  # the method and its learning rate (papers set the rate per method)
DP_FIELDS = ("method.dp", "method.dp.")  # DP-SGD's settings: held equal when methods are compared


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
    if any(field_matches(f, DP_FIELDS) for f in shown) and dp_label(flat, []) != "no DP":
        name += " + " + dp_label(flat, [])
    extra = describe(flat, [f for f in shown if f not in ("method.kind", "method.rank")
                            and not field_matches(f, DP_FIELDS)])
    return f"{name} ({extra.replace('method.', '').replace('train.', '')})" if extra else name


def method_subject(treated: dict[str, Any]) -> str:
    """How a finding names the treated method: "LoRA", "head-only", ..."""
    kind = treated.get("method.kind")
    return SUBJECT.get(kind, str(kind))


def method_comparison(metrics: Sequence[Metric], utility: Metric | None = None,
                      extra: Callable[[Comparison], dict[str, Any]] | None = None) -> Comparing:
    """Each method against full fine-tuning on the same data, attack and seed."""
    return Comparing("method", METHOD_FIELDS, {"method.kind": "full"}, tuple(metrics), utility, label=method_label,
                     subject=method_subject, shown=shown_fields, extra=extra, excluded=DP_FIELDS)


def dp_label(flat: dict[str, Any], shown: list[str]) -> str:
    """`DP (target_epsilon=8)`, `DP (noise_multiplier=1)`, or `no DP`."""
    eps, sigma = flat.get("method.dp.target_epsilon"), flat.get("method.dp.noise_multiplier")
    if eps is None and sigma is None:
        return "no DP"
    return f"DP (target_epsilon={eps:g})" if eps is not None else f"DP (noise_multiplier={sigma:g})"


def dp_comparison(metrics: Sequence[Metric], utility: Metric | None = None) -> Comparing:
    """DP-SGD against the same method trained without it, on the same data and seed (method.dp null)."""
    none = {"method.dp": None, "method.dp.target_epsilon": None, "method.dp.noise_multiplier": None}
    return Comparing("DP-SGD", DP_FIELDS, none, without_claims(metrics), utility, label=dp_label,
                     subject=lambda t: dp_label(t, []))


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
        flat = config_fields(r["config"])
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


@dataclass(frozen=True)
class Tested:
    """A paired difference's tests, Holm-adjusted within its family (one declaration x one metric)."""

    p: float | None = None
    p_holm: float | None = None
    tost: float | None = None
    tost_holm: float | None = None
    margin: float | None = None


def tested(stats_list: Sequence[Stats], margin: float | None) -> list[Tested]:
    """The t-test and TOST p of each difference of one family, and both Holm-adjusted over the family (rows
    below MIN_SEEDS are not tested)."""
    ps = [s.p if s.n >= MIN_SEEDS else None for s in stats_list]
    ts = [tost_p(s, margin) if margin is not None and s.n >= MIN_SEEDS else None for s in stats_list]
    return [Tested(p, ph, t, th, margin) for p, ph, t, th in zip(ps, holm(ps), ts, holm(ts), strict=True)]


def direction(s: Stats, test: Tested | None = None) -> int:
    """+1 when the difference is shown above 0, -1 below, 0 otherwise: shown = its (Holm-adjusted, when `test`
    is given) two-sided t-test p < ALPHA, at MIN_SEEDS or more seeds."""
    p = s.p if test is None else test.p_holm
    if s.n < MIN_SEEDS or p is None or p >= ALPHA or not s.mean:
        return 0
    return 1 if s.mean > 0 else -1


def is_equivalent(s: Stats, test: Tested | None) -> bool:
    """Whether the (Holm-adjusted) TOST shows |difference| < margin."""
    return test is not None and s.n >= MIN_SEEDS and test.tost_holm is not None and test.tost_holm < ALPHA


def verdict(s: Stats, higher_is_better: bool, subject: str, better: str, worse: str,
            test: Tested | None = None) -> str:
    """`LoRA more robust` / `LoRA less robust` / `equivalent (±m)` / `no difference detected`."""
    if s.n == 0:
        return "no pairs"
    if s.n == 1:
        return NO_VERDICT_N1
    if s.n < MIN_SEEDS:
        return f"n={s.n}: too few seeds for a verdict"
    d = direction(s, test)
    if d:
        word = f"{subject} {better if (d > 0) == higher_is_better else worse}"
        # a difference can be both detectable and too small to matter: say so
        return f"{word}, within ±{test.margin:g}" if is_equivalent(s, test) else word  # type: ignore[union-attr]
    if is_equivalent(s, test):
        return f"equivalent (±{test.margin:g})"  # type: ignore[union-attr]
    return "no difference detected"


def claim_status(s: Stats, claimed: int | None, test: Tested | None = None) -> str:
    """Against a claim on the sign of the difference (+1: treated higher, -1: lower): 'holds' when the test shows
    that sign, 'fails' when it shows the opposite or equivalence ('fails: equivalent (±m)'), 'not shown'
    otherwise; '' when there is no claim."""
    if not claimed:
        return ""
    d = direction(s, test)
    if d:
        return "holds" if d == claimed else "fails"
    if is_equivalent(s, test):
        return f"fails: equivalent (±{test.margin:g})"  # type: ignore[union-attr]
    return "not shown"


def matched(utility: Metric, s: Stats, subject: str, test: Tested | None = None) -> str:
    """Whether the two sides reached the same utility, by equivalence (TOST within the utility's margin), not by
    a difference that fails to reach significance: a side that leaks less only because it learned less is not a
    finding."""
    if s.n < MIN_SEEDS:
        return f"n={s.n}: utility not compared"
    test = test or tested([s], margin_of(utility))[0]
    d = direction(s, test)
    if d and (d > 0) != utility.higher_is_better:
        return f"no: {subject} has {utility.worse} (learned less): leakage not compared at matched utility"
    if d:
        return f"no: {subject} has {utility.better}"
    if is_equivalent(s, test):
        return f"yes: {utility.name} equivalent within ±{margin_of(utility):g}"
    return f"not shown: {utility.name} neither differs nor is equivalent within ±{margin_of(utility):g}"


def power_columns(s: Stats, diffs: Sequence[float], effect: float | None) -> dict[str, Any]:
    """MDD at the seeds run, the seeds a difference of `effect` would need (the paper's effect when known, else
    the observed mean), and the exact sign-flip p from EXACT_FROM seeds on."""
    target = effect if effect is not None else s.mean
    return {"MDD": s.mdd(),
            "seeds needed": seeds_needed(target, s.std) if target is not None and s.n >= 2 else None,
            "sign-flip p": sign_flip_p(diffs) if s.n >= EXACT_FROM else None}


def finding_columns(decl: Comparing, c: Comparison, shown: list[str], metric: Metric,
                    test: Tested | None = None) -> dict[str, Any]:
    """The columns every finding has: the comparison, its paired difference with its t interval, its tests
    (Holm-adjusted within the family), the verdict, and the claim attached to the metric (when it is about the
    treated side) with whether our test shows it."""
    claim = metric.claim_for(c.treated)
    test = test or tested([c.stats], margin_of(metric))[0]
    return {
        "comparison": f"{decl.side(c.treated, shown)} − {decl.side(c.reference, shown)}",
        "metric": metric.name,
        "n": c.stats.n,
        **stat_columns("difference", c.stats),
        "p": test.p, "p (Holm)": test.p_holm, "margin": margin_of(metric), "TOST p (Holm)": test.tost_holm,
        **power_columns(c.stats, c.diffs, claim.effect if claim else None),
        "family": f"{decl.name} × {metric.name}",
        "verdict": verdict(c.stats, metric.higher_is_better, decl.subject_of(c, shown), metric.better, metric.worse,
                           test),
        "paper claim": f"{claim.text} ({claim.source})" if claim else "",
        "claim": claim_status(c.stats, claim.sign if claim else None, test),
    }


def _side_key(c: Comparison) -> tuple:
    return frozen(c.treated), frozen(c.reference), frozen(c.context)


def findings(rows: list[dict], comparisons: Sequence[Comparing],
             setting: Callable[[Comparing, Comparison, list[str]], str]) -> tuple[list[dict], list[Comparison]]:
    """One row per (declaration, metric, paired comparison), in that order, comparisons sorted by setting and
    side; `setting(decl, c, context_fields)` names what is held equal. The rows and the comparisons behind them."""
    all_flat = [config_fields(r["config"]) for r in rows]
    out, comps = [], []
    for decl in comparisons:
        shown = decl.shown_fields(all_flat)
        ctx_fields = [f for f in varying(all_flat) if not decl.is_treatment(f) and f != "seed"]
        util: dict[tuple, tuple[Comparison, Tested]] = {}
        if decl.utility:
            ucomps = decl.pairs(rows, decl.utility)
            util = {_side_key(c): (c, t) for c, t in zip(ucomps, tested([c.stats for c in ucomps],
                                                                        margin_of(decl.utility)), strict=True)}
        for metric in decl.metrics:
            found = sorted(((setting(decl, c, ctx_fields), decl.side(c.treated, shown), i, c)
                            for i, c in enumerate(decl.pairs(rows, metric))), key=lambda t: t[:3])
            tests = tested([c.stats for *_, c in found], margin_of(metric))  # the family: this metric, this declaration
            for (where, _, _, c), test in zip(found, tests, strict=True):
                row = {"setting": where, **finding_columns(decl, c, shown, metric, test)}
                if decl.utility is not None:
                    u = util.get(_side_key(c))
                    row["matched utility"] = matched(decl.utility, u[0].stats, decl.subject_of(c, shown), u[1]) \
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
