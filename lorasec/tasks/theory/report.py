"""The predictor study for `lorasec report`: does any theory quantity rank configurations the way measured
robustness does? For each predictor and outcome (ASR, ΔCACC), Spearman ρ at two levels, and a scatter plot:

- across configurations (the question asked): each configuration's mean over its seeds, ρ across configurations,
  CI by resampling the seeds within each configuration (seeds are the replication unit);
- across cells: every seed a point, CI by resampling cells.

numpy, scipy, matplotlib only (no torch).
"""

from __future__ import annotations

import json

import numpy as np
from scipy.stats import norm, spearmanr

from lorasec.tasks.base import Section
from lorasec.tasks.evidence import ALPHA, holm
from lorasec.tasks.theory.table import OUTCOMES, PREDICTORS, row

N_BOOT = 1000
MIN_CELLS = 4  # fewer cells than this: no ρ


def _interval(rho: float, boots: list[float], level: float) -> tuple[float, float, float]:
    """ρ and the percentile interval of its bootstrap replicates (none usable: the point itself)."""
    if not boots:
        return rho, rho, rho
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return rho, float(lo), float(hi)


def spearman_ci(x: np.ndarray, y: np.ndarray, n_boot: int = N_BOOT, level: float = 0.95,
                seed: int = 0) -> tuple[float | None, float | None, float | None]:
    """Spearman ρ of (x, y) and a percentile bootstrap CI over resampled pairs (resamples where either side is
    constant have no ρ and are skipped). A constant input has no ρ: (None, None, None), shown as "undefined"."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, None, None
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            boots.append(spearmanr(x[i], y[i]).statistic)
    return _interval(rho, boots, level)


def config_spearman_ci(groups: list[tuple[np.ndarray, np.ndarray]], n_boot: int = N_BOOT, level: float = 0.95,
                       seed: int = 0) -> tuple[float | None, float | None, float | None]:
    """Spearman ρ across configurations of the per-configuration means (x, y over its seeds), and a percentile CI
    from resampling each configuration's seeds with replacement (stratified bootstrap). Constant means: no ρ
    (None, None, None)."""
    mx = np.array([x.mean() for x, _ in groups])
    my = np.array([y.mean() for _, y in groups])
    if np.ptp(mx) == 0 or np.ptp(my) == 0:
        return None, None, None
    rho = float(spearmanr(mx, my).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        picks = [rng.integers(0, len(x), len(x)) for x, _ in groups]
        bx = np.array([x[i].mean() for (x, _), i in zip(groups, picks, strict=True)])
        by = np.array([y[i].mean() for (_, y), i in zip(groups, picks, strict=True)])
        if np.ptp(bx) > 0 and np.ptp(by) > 0:
            boots.append(spearmanr(bx, by).statistic)
    return _interval(rho, boots, level)


RHO_MARGIN = 0.3  # "does not rank": |ρ| < 0.3, shown by a TOST on Fisher's z


def rank_tests(rho: float | None, n: int) -> tuple[float | None, float | None]:
    """Two-sided p of ρ = 0 and TOST p of |ρ| < RHO_MARGIN, both on Fisher's z with se = 1.03 / sqrt(n - 3)
    (Fieller, Hartley and Pearson's variance for Spearman's ρ); None when ρ is undefined or n < 4."""
    if rho is None or n < 4:
        return None, None
    z, se = float(np.arctanh(np.clip(rho, -0.999999, 0.999999))), 1.03 / np.sqrt(n - 3)
    m = float(np.arctanh(RHO_MARGIN))
    p = float(2 * norm.sf(abs(z) / se))
    tost = float(max(norm.sf((z + m) / se), norm.cdf((z - m) / se)))
    return p, tost


def with_verdicts(rows: list[dict], n_field: str) -> list[dict]:
    """Holm over the table (the family: every predictor x outcome x attack in it) and a verdict per row: "ranks" /
    "ranks inversely" (adjusted p < ALPHA), "does not rank (|ρ| < 0.3)" (adjusted TOST p < ALPHA), "not shown", or
    "undefined (constant)"."""
    tests = [rank_tests(r["rho"], r[n_field]) for r in rows]
    p_adj, t_adj = holm([t[0] for t in tests]), holm([t[1] for t in tests])
    for r, (p, _), pa, ta in zip(rows, tests, p_adj, t_adj, strict=True):
        if r["rho"] is None:
            verdict = "undefined (constant)"
        elif pa is not None and pa < ALPHA:
            verdict = "ranks" if r["rho"] > 0 else "ranks inversely"
        elif ta is not None and ta < ALPHA:
            verdict = f"does not rank (|ρ| < {RHO_MARGIN:g})"
        else:
            verdict = "not shown"
        r |= {"p": p, "p (Holm)": pa, "TOST p (Holm)": ta, "verdict": verdict}
    return rows


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _configuration(result: dict) -> str:
    """Everything of a theory cell's config but its seed (the cell's own seed follows it)."""
    cfg = json.loads(json.dumps(result["config"]))
    cfg.pop("seed", None)
    cfg.get("cell", {}).pop("seed", None)
    return json.dumps(cfg, sort_keys=True)


def config_study(results: list[dict]) -> list[dict]:
    """One row per (predictor, outcome, attack kind) across configurations: configurations, seeds, ρ, CI."""
    rows = [row(r) | {"configuration": _configuration(r)} for r in results]
    out = []
    for attack in sorted({r["attack"].split()[0] for r in rows}):
        sub = [r for r in rows if r["attack"].split()[0] == attack]
        for outcome in OUTCOMES:
            for pred in PREDICTORS:
                by_cfg: dict[str, list[tuple[float, float]]] = {}
                for r in sub:
                    if r[pred] is not None and r[outcome] is not None:
                        by_cfg.setdefault(r["configuration"], []).append((r[pred], r[outcome]))
                if len(by_cfg) < MIN_CELLS:
                    continue
                groups = [tuple(map(np.array, zip(*pts, strict=True))) for pts in by_cfg.values()]
                rho, lo, hi = config_spearman_ci(groups)  # type: ignore[arg-type]
                out.append({"attack": attack, "outcome": outcome, "predictor": pred, "configurations": len(groups),
                            "seeds": "-".join(sorted({str(len(g[0])) for g in groups})),
                            "rho": _round(rho), "ci_low": _round(lo), "ci_high": _round(hi)})
    return with_verdicts(out, "configurations")


def study(results: list[dict]) -> list[dict]:
    """One row per (predictor, outcome, attack kind): n cells, ρ, CI."""
    rows = [row(r) for r in results]
    out = []
    for attack in sorted({r["attack"].split()[0] for r in rows}):
        sub = [r for r in rows if r["attack"].split()[0] == attack]
        for outcome in OUTCOMES:
            for pred in PREDICTORS:
                pairs = [(r[pred], r[outcome]) for r in sub if r[pred] is not None and r[outcome] is not None]
                if len(pairs) < MIN_CELLS:
                    continue
                x, y = map(np.array, zip(*pairs, strict=True))
                rho, lo, hi = spearman_ci(x, y)
                out.append({"attack": attack, "outcome": outcome, "predictor": pred, "n": len(pairs),
                            "rho": _round(rho), "ci_low": _round(lo), "ci_high": _round(hi)})
    return with_verdicts(out, "n")


def _scatter(rows: list[dict], outcome: str, predictors: list[str]):  # -> matplotlib Figure
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    cols = min(4, len(predictors))
    lines = -(-len(predictors) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.8 * lines), layout="constrained")
    methods = sorted({r["method"] for r in rows})
    for k, pred in enumerate(predictors):
        ax = fig.add_subplot(lines, cols, k + 1)
        for j, m in enumerate(methods):
            pts = [(r[pred], r[outcome]) for r in rows if r["method"] == m and r[pred] is not None
                   and r[outcome] is not None]
            if pts:
                ax.scatter(*zip(*pts, strict=True), s=14, label=m, color=f"C{j % 10}")
        ax.set_xlabel(pred, fontsize=8)
        ax.set_ylabel(outcome, fontsize=8)
        ax.tick_params(labelsize=7)
    if methods:
        fig.legend(*fig.axes[0].get_legend_handles_labels(), fontsize=7, loc="outside lower center",
                   ncols=min(6, len(methods)))
    return fig


def sections(results: list[dict]) -> list[Section]:
    """The report's theory section: the study table, the cells, and one scatter figure per attack and outcome."""
    if not results:
        return []
    table = study(results)
    by_config = config_study(results)
    cells = [row(r) for r in results]

    def excluding(rows: list[dict]) -> str:
        strong = [r for r in rows if r["verdict"].startswith("ranks")]
        null = sum(r["verdict"].startswith("does not rank") for r in rows)
        undefined = sum(r["rho"] is None for r in rows)
        return (f"{len(strong)} of {len(rows)} predictor/outcome pairs rank the outcome after Holm's adjustment over "
                f"the table, {null} are shown not to (|ρ| < {RHO_MARGIN:g} by a TOST on Fisher's z), {undefined} are "
                "undefined (a constant predictor or outcome), the rest not shown" + (": " + "; ".join(
                    f"{r['predictor']} vs {r['outcome']} ({r['attack']}) ρ={r['rho']:+.2f} "
                    f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}], Holm p {r['p (Holm)']:.3g}" for r in strong)
                    if strong else ""))

    lines = ["ASR: higher = less robust to the backdoor; ΔCACC: poisoned minus clean accuracy of the same seed. "
             "A predictor *ranks* the outcome when Spearman's ρ differs from 0 (Fisher-z test, Holm-adjusted over the "
             f"table) and *does not rank* it only when |ρ| < {RHO_MARGIN:g} is shown (TOST, Holm-adjusted); an "
             "interval that merely covers 0 is *not shown*.", ""]
    if by_config:
        lines += ["**Across configurations** (the question asked): each configuration's mean over its seeds, "
                  "Spearman ρ across configurations, 95% CI from resampling the seeds within each configuration "
                  f"({N_BOOT} resamples; at least {MIN_CELLS} configurations). " + excluding(by_config) + ".", ""]
    lines += ["**Across cells**: Spearman ρ of each predictor against the measured outcome across the stored theory "
              f"cells, every seed a point (95% percentile bootstrap CI over cells, {N_BOOT} resamples; at least "
              f"{MIN_CELLS} cells). " + excluding(table) + "."]
    figures = {}
    for attack in sorted({r["attack"].split()[0] for r in cells}):
        sub = [r for r in cells if r["attack"].split()[0] == attack]
        for outcome in OUTCOMES:
            preds = [p for p in PREDICTORS if any(r[p] is not None and r[outcome] is not None for r in sub)]
            if preds:
                figures[f"theory_{attack}_{'asr' if outcome == 'ASR' else 'dcacc'}"] = _scatter(sub, outcome, preds)
    return [Section(title="Theory: do eNTK, M_Δ and entropy proxies predict measured robustness?",
                    text="\n".join(lines), tables={"theory_predictors_by_configuration": by_config,
                                                     "theory_predictors": table, "theory_cells": cells},
                    figures=figures)]
