"""The memorization sections of `lorasec report` (paper 2): paired leakage differences between methods over
seeds, read beside utility (held-out perplexity), with verdicts against the paper's claim; extraction vs
duplication, exposure vs insertions, MIA ROC curves, leakage vs utility with its Pareto front.

Reads stored result dicts only: no torch, no training stack.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from lorasec.tasks.base import Section
from lorasec.tasks.evidence import (
    Claim,
    Comparing,
    Comparison,
    Group,
    Metric,
    declare,
    describe,
    dp_comparison,
    findings,
    groups,
    method_comparison,
    method_label,
    pareto_front,
    roc_curve,
    shown_fields,
    stat_columns,
    stats,
    varying,
)
from lorasec.tasks.memorization.matched import matched_rows
from lorasec.tasks.plots import finish, loss_band, mean_band, panels, series_style, style

PAPER = "paper 2 (arXiv 2506.20856)"
MIA_SCORES = ("loss", "reference", "zlib", "min_k", "min_k_plus_plus")
FPRS = ("0.001", "0.01", "0.1")

# --- what one stored cell says ------------------------------------------------------------------------------


def exact(r: dict) -> float:
    return r["metrics"]["extraction"]["exact_rate"]


def relaxed(r: dict) -> float | None:
    return r["metrics"]["extraction"].get("relaxed_rate")


def exposure(r: dict) -> float | None:
    """Mean exposure (bits) over the cell's canaries."""
    xs = [c["exposure"] for c in r["metrics"]["exposure"] if c.get("exposure") is not None]
    return float(np.mean(xs)) if xs else None


def auc(score: str) -> Callable[[dict], float | None]:
    def value(r: dict) -> float | None:
        m = r["metrics"]["mia"].get(score)
        return m["auc"] if m else None
    return value


def tpr(r: dict, score: str, fpr: str) -> float | None:
    m = r["metrics"]["mia"].get(score)
    if not m:
        return None
    t = m["tpr_at_fpr"]
    return t.get(fpr, t.get(str(float(fpr))))


def held_out_ppl(r: dict) -> float:
    return r["metrics"]["utility"]["held_out_ppl"]


def audited_epsilon(r: dict) -> float | None:
    """The one-run audit's lower bound on epsilon (config `audit`), None where the cell ran no audit."""
    a = r["metrics"].get("audit")
    return a["epsilon_lower_bound"] if a else None


def accountant_epsilon(r: dict) -> float | None:
    """The RDP accountant's epsilon of a DP cell (None without DP, or without a privacy claim)."""
    return (r.get("train", {}).get("dp") or {}).get("epsilon")


def dup_slope(r: dict) -> float | None:
    """Growth of memorization with duplication: least-squares slope of the relaxed rate (exact when there are no
    embeddings) against log2(copies), over the cell's duplication counts."""
    by = r["metrics"]["extraction_by_duplication"]
    pts = [(np.log2(int(c)), v.get("relaxed_rate") if v.get("relaxed_rate") is not None else v["exact_rate"])
           for c, v in by.items()]
    if len(pts) < 2:
        return None
    x, y = np.array([p[0] for p in pts]), np.array([p[1] for p in pts], dtype=float)
    return float(np.polyfit(x, y, 1)[0])


# --- what is compared (declarations: adding one touches no evidence code) ------------------------------------

LEAKS = Claim(-1, "LoRA leaks less than full fine-tuning", PAPER, {"method.kind": "lora"})
DUPLICATION = Claim(-1, "LoRA's memorization is driven less by duplication", PAPER, {"method.kind": "lora"})


def leak(name: str, value: Callable[[dict], float | None], margin: float = 0.02) -> Metric:
    return Metric(name, value, False, "leaks less", "leaks more", claims=(LEAKS,), margin=margin)


def held_out_nll(r: dict) -> float:
    """Mean held-out token NLL (nats): the log of the stored perplexity."""
    return float(np.log(held_out_ppl(r)))


# equivalence margin of utility: 0.02 nats of held-out NLL (about 2% perplexity)
UTILITY = Metric("held-out NLL (nats)", held_out_nll, False, "lower held-out NLL", "higher held-out NLL",
                 margin=0.02)
METRICS = (
    leak("exact extraction rate", exact),
    leak("relaxed extraction rate (cosine ≥ threshold)", relaxed),
    leak("canary exposure (bits, mean over canaries)", exposure, margin=0.5),
    *[leak(f"MIA AUC ({s})", auc(s)) for s in MIA_SCORES],
    leak("audited epsilon (one-run lower bound)", audited_epsilon, margin=0.25),
    Metric("memorization vs duplication (slope per doubling)", dup_slope, False,
           "memorization grows less with duplication", "memorization grows more with duplication",
           claims=(DUPLICATION,)),
    UTILITY,
)
METHOD = method_comparison(METRICS, utility=UTILITY)
DP = dp_comparison(METRICS, utility=UTILITY)  # pairs only where a store holds DP cells and their non-DP twins
COMPARISONS = (METHOD, DP)


def setting(decl: Comparing, c: Comparison, ctx_fields: list[str]) -> str:
    return describe(c.context, ctx_fields) or "all cells"


def study(compare: tuple[tuple[tuple[str, object], ...], ...]) -> tuple[Comparing, ...]:
    """The task's declarations and a study's own (`lorasec report --compare FIELD=REFERENCE`)."""
    return COMPARISONS + tuple(declare(ref, METRICS, UTILITY) for ref in compare)


def comparison_rows(rows: list[dict], comparisons: tuple[Comparing, ...] = COMPARISONS
                    ) -> tuple[list[dict], list[Comparison]]:
    return findings(rows, comparisons, setting)


# --- groups and figures -------------------------------------------------------------------------------------


def _label(g: Group, shown: list[str], ctx: list[str]) -> str:
    where = describe(g.config, ctx)
    return method_label(g.config, shown) + (f" [{where}]" if where else "")


def group_rows(gs: list[Group], shown: list[str], ctx: list[str]) -> list[dict]:
    out = []
    for g in gs:
        row: dict[str, Any] = {"method": method_label(g.config, shown), "setting": describe(g.config, ctx),
                               "n": len(g.rows), "seeds": g.seeds}
        row |= stat_columns("held-out ppl", g.stats(held_out_ppl))
        row["member ppl mean"] = g.stats(lambda r: r["metrics"]["utility"]["member_ppl"]).mean
        row |= stat_columns("exact rate", g.stats(exact))
        row |= stat_columns("relaxed rate", g.stats(relaxed))
        row |= stat_columns("exposure", g.stats(exposure))
        for s in MIA_SCORES:
            row |= {f"AUC {s} mean": g.stats(auc(s)).mean, f"AUC {s} std": g.stats(auc(s)).std}
        row["weights"] = "; ".join(sorted({r["model"].get("origin") for r in g.rows if r["model"].get("origin")}))
        row["cells"] = g.keys
        out.append(row)
    return out


def by_duplication(gs: list[Group], shown: list[str], ctx: list[str]) -> tuple[list[dict], Any]:
    rows, series = [], []
    for g in gs:
        counts = sorted({int(c) for r in g.rows for c in r["metrics"]["extraction_by_duplication"]})
        pts = []
        for c in counts:
            def val(r: dict, key: str, c: int = c) -> float | None:
                v = r["metrics"]["extraction_by_duplication"].get(str(c))
                return v.get(key) if v else None
            se, sr = stats(val(r, "exact_rate") for r in g.rows), stats(val(r, "relaxed_rate") for r in g.rows)
            rows.append({"method": _label(g, shown, ctx), "copies": c, "n": se.n, **stat_columns("exact", se),
                         **stat_columns("relaxed", sr), "cells": g.keys})
            pts.append((c, se, sr))
        series.append((_label(g, shown, ctx), pts))
    with style():
        fig, (a1, a2) = panels(2)
        for i, (label, pts) in enumerate(series):
            mean_band(a1, [p[0] for p in pts], [p[1] for p in pts], label, i)
            mean_band(a2, [p[0] for p in pts], [p[2] for p in pts], label, i)
        for ax, name in ((a1, "exact extraction rate"), (a2, "relaxed extraction rate")):
            ax.set_xscale("log", base=2)
            finish(ax, name, "copies of the record in training", name)
    return rows, fig


def by_model_size(gs: list[Group], shown: list[str], ctx: list[str]) -> Any:
    """Extraction vs model size, one series per method; None unless the model config varies. The size of a model
    is its smallest stored total parameter count over methods (full and head-only count no adapters)."""
    models = {json.dumps({k: v for k, v in g.config.items() if k.startswith("model.")}, sort_keys=True): g
              for g in gs}
    if len(models) < 2:
        return None
    size: dict[str, int] = {}
    for g in gs:
        m = json.dumps({k: v for k, v in g.config.items() if k.startswith("model.")}, sort_keys=True)
        size[m] = min([size.get(m, 1 << 62)] + [r["model"]["total_params"] for r in g.rows])
    series: dict[str, list[tuple[int, Group]]] = {}
    rest = [f for f in ctx if not f.startswith("model.")]
    for g in gs:
        m = json.dumps({k: v for k, v in g.config.items() if k.startswith("model.")}, sort_keys=True)
        series.setdefault(_label(g, shown, rest), []).append((size[m], g))
    with style():
        fig, (a1, a2) = panels(2)
        for i, (label, sg) in enumerate(sorted(series.items())):
            sg = sorted(sg, key=lambda p: p[0])
            mean_band(a1, [p[0] for p in sg], [p[1].stats(exact) for p in sg], label, i)
            mean_band(a2, [p[0] for p in sg], [p[1].stats(relaxed) for p in sg], label, i)
        for ax, name in ((a1, "exact extraction rate"), (a2, "relaxed extraction rate")):
            ax.set_xscale("log")
            finish(ax, f"{name} vs model size", "parameters of the base model", name)
    return fig


def by_insertions(gs: list[Group], shown: list[str], ctx: list[str]) -> tuple[list[dict], Any]:
    rows = []
    with style():
        fig, (ax,) = panels(1, width=4.6)
        for i, g in enumerate(gs):
            counts = sorted({c["count"] for r in g.rows for c in r["metrics"]["exposure"]})
            ss = [stats(np.mean([c["exposure"] for c in r["metrics"]["exposure"] if c["count"] == k])
                        for r in g.rows) for k in counts]
            for k, s in zip(counts, ss, strict=True):
                rows.append({"method": _label(g, shown, ctx), "insertions": k, "n": s.n,
                             **stat_columns("exposure", s), "cells": g.keys})
            mean_band(ax, counts, ss, _label(g, shown, ctx), i)
        ax.set_xscale("log", base=2)
        finish(ax, "canary exposure", "insertions of the canary", "exposure (bits)")
    return rows, fig


def roc_figure(gs: list[Group], shown: list[str], ctx: list[str]) -> tuple[list[dict], Any]:
    """ROC curves from the stored per-record scores on log-log axes, mean TPR over seeds on a common FPR grid."""
    rows = []
    with style():
        fig, axes = panels(len(MIA_SCORES), width=3.2, height=3.0)
        for ax, score in zip(axes, MIA_SCORES, strict=True):
            floor = 1.0
            for i, g in enumerate(gs):
                curves = []
                for r in g.rows:
                    recs = r["outputs"]["mia"]
                    mem = [x[score] for x in recs if x["member"]]
                    non = [x[score] for x in recs if not x["member"]]
                    curves.append(roc_curve(mem, non))
                    floor = min(floor, 1 / max(len(non), 1))
                grid = np.logspace(np.log10(floor), 0, 60)
                t = np.mean([np.interp(grid, f, tp) for f, tp in curves], axis=0)
                st = series_style(i)
                ax.plot(grid, np.maximum(t, floor / 2), color=st["color"], linestyle=st["linestyle"], linewidth=1.2,
                        label=f"{method_label(g.config, shown)} (n={len(curves)})")
                rows.append({"method": _label(g, shown, ctx), "score": score, "n": len(g.rows),
                             **stat_columns("AUC", g.stats(auc(score))),
                             **{f"TPR@{float(f):.1%} FPR mean": g.stats(lambda r, f=f, s=score: tpr(r, s, f)).mean
                                for f in FPRS}, "cells": g.keys})
            ax.plot([floor, 1], [floor, 1], color="#999999", linewidth=0.8, linestyle=":")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(floor, 1)
            ax.set_ylim(floor / 2, 1.05)
            finish(ax, f"MIA: {score}", "false positive rate", "true positive rate", legend=score == MIA_SCORES[0])
    return rows, fig


def leakage_utility(gs: list[Group], shown: list[str], ctx: list[str]) -> tuple[list[dict], Any]:
    pts = []
    for g in gs:
        x, y = g.stats(held_out_ppl), g.stats(lambda r: relaxed(r) if relaxed(r) is not None else exact(r))
        pts.append((g, x, y))
    front = pareto_front([(x.mean, y.mean) for _, x, y in pts])
    rows = [{"method": _label(g, shown, ctx), "n": x.n, "held-out ppl mean": x.mean, "leakage mean": y.mean,
             "Pareto front": f, "cells": g.keys} for (g, x, y), f in zip(pts, front, strict=True)]
    with style():
        fig, (ax,) = panels(1, width=4.8, height=3.4)
        for i, (g, x, y) in enumerate(pts):
            st = series_style(i)
            ax.errorbar([x.mean], [y.mean], xerr=[[x.mean - (x.lo if x.lo is not None else x.mean)],
                                                  [(x.hi if x.hi is not None else x.mean) - x.mean]],
                        yerr=[[y.mean - (y.lo if y.lo is not None else y.mean)],
                              [(y.hi if y.hi is not None else y.mean) - y.mean]],
                        color=st["color"], marker=st["marker"], markersize=7, capsize=3, linestyle="none",
                        label=f"{_label(g, shown, ctx)} (n={x.n})")
        fr = sorted((x.mean, y.mean) for (_, x, y), f in zip(pts, front, strict=True) if f)
        ax.step([p[0] for p in fr], [p[1] for p in fr], where="post", color="#555555", linewidth=1,
                linestyle="--", label="Pareto front")
        finish(ax, "leakage vs utility (lower-left is better)", "held-out perplexity",
               "relaxed extraction rate (exact if no embeddings)")
    return rows, fig


def privacy_rows(gs: list[Group], shown: list[str], ctx: list[str]) -> tuple[list[dict], Any]:
    """Per configuration: the accountant's epsilon (DP cells), the audited lower bound (every audited cell), and
    utility and leakage beside them; the figure puts both epsilons against held-out NLL."""
    rows, pts = [], []
    for g in gs:
        lb, acc = g.stats(audited_epsilon), g.stats(accountant_epsilon)
        if lb.n == 0 and acc.n == 0:
            continue
        a = [r["metrics"]["audit"] for r in g.rows if r["metrics"].get("audit")]
        nll = g.stats(held_out_nll)
        row: dict[str, Any] = {"method": _label(g, shown, ctx), "n": len(g.rows), "seeds": g.seeds,
                               "accountant epsilon mean": acc.mean}
        row |= stat_columns("audited epsilon", lb)
        row["correct / guesses"] = ", ".join(f"{x['correct']}/{x['guesses']}" for x in a)
        row |= stat_columns("held-out NLL", nll)
        row["AUC reference mean"] = g.stats(auc("reference")).mean
        row["exact rate mean"] = g.stats(exact).mean
        row["exposure mean"] = g.stats(exposure).mean
        row["cells"] = g.keys
        rows.append(row)
        pts.append((g, nll, lb, acc))
    if not rows:
        return rows, None
    with style():
        fig, (ax,) = panels(1, width=5.2, height=3.6)
        for i, (g, nll, lb, acc) in enumerate(pts):
            st = series_style(i)
            if lb.n:
                ax.errorbar([nll.mean], [lb.mean], yerr=[[lb.mean - (lb.lo if lb.lo is not None else lb.mean)],
                                                         [(lb.hi if lb.hi is not None else lb.mean) - lb.mean]],
                            color=st["color"], marker=st["marker"], markersize=7, capsize=3, linestyle="none",
                            label=f"{_label(g, shown, ctx)} (n={lb.n})")
            if acc.n:
                ax.plot([nll.mean], [acc.mean], color=st["color"], marker=st["marker"], markersize=9,
                        markerfacecolor="none", linestyle="none")
        finish(ax, "privacy vs utility: audited epsilon (filled, t interval), accountant's (hollow)",
               "held-out NLL (nats)", "epsilon")
    return rows, fig


def loss_figure(gs: list[Group], shown: list[str], ctx: list[str]) -> Any:
    with style():
        fig, (ax,) = panels(1, width=4.8)
        for i, g in enumerate(gs):
            loss_band(ax, [r["train"]["losses"] for r in g.rows if r.get("train", {}).get("losses")],
                      _label(g, shown, ctx), i)
        finish(ax, "training loss", "optimizer step", "next-token loss")
    return fig


# --- the hook -----------------------------------------------------------------------------------------------


def sections(rows: list[dict], compare: tuple[tuple[tuple[str, object], ...], ...] = ()) -> list[Section]:
    """`Task.report` of memorization: verdicts (leakage beside utility), groups, figures."""
    gs = sorted(groups(rows), key=lambda g: (g.config.get("method.kind") != "full", str(g.config)))
    flat = [g.config for g in gs]
    shown = shown_fields(flat)
    ctx = [f for f in varying(flat) if not METHOD.is_treatment(f) and not DP.is_treatment(f)]  # DP is in the label
    findings_table, _ = comparison_rows(rows, study(compare))
    origins = sorted({f"{r['config']['model']['name']}: {r['model']['origin']}" for r in rows
                      if r["model"].get("origin")})
    text = (
        "Each row compares a method with full fine-tuning on the same model, corpus and seed (paired by seed): "
        "mean, std and t interval of the per-seed differences, Holm-adjusted t-test and TOST (see the overview). "
        "Leakage is lower-is-better. "
        f"`{PAPER}` claims LoRA **leaks less** than full fine-tuning and that its memorization is driven less by "
        "duplication; the SPEC lists no headline numbers for this paper, so there is no paper-number column. "
        "*matched utility* says whether the two methods reach the same held-out NLL (equivalent within the margin by a "
    "TOST, not a difference that merely fails to reach significance): a method that leaks "
        "less only because it learned less is not a finding.")
    if origins:
        text += "\n\nWeights: " + "; ".join(origins) + " (perplexities depend on it)."
    if all(len(g.rows) == 1 for g in gs):
        text += "\n\nEvery group here has **one seed (n=1)**: the numbers are single runs and no verdict is drawn."
    dup_rows, dup_fig = by_duplication(gs, shown, ctx)
    exp_rows, exp_fig = by_insertions(gs, shown, ctx)
    roc_rows, roc_fig = roc_figure(gs, shown, ctx)
    lu_rows, lu_fig = leakage_utility(gs, shown, ctx)
    figures: dict[str, Any] = {"extraction_vs_duplication": dup_fig}
    size_fig = by_model_size(gs, shown, ctx)
    if size_fig is not None:
        figures["extraction_vs_model_size"] = size_fig
    figures |= {"exposure_vs_insertions": exp_fig, "mia_roc": roc_fig, "leakage_vs_utility": lu_fig,
                "loss_curves": loss_figure(gs, shown, ctx)}
    priv_rows, priv_fig = privacy_rows(gs, shown, ctx)
    privacy = [Section(
        "Privacy: accountant's epsilon and the audited lower bound",
        "Per configuration over seeds. *accountant epsilon*: what Opacus's RDP accountant guarantees for a DP cell "
        "at its delta (an upper bound). *audited epsilon*: the one-run lower bound of Steinke, Nasr and Jagielski "
        "(2023) from the cell's own audit canaries (each trained on with probability 1/2 by a stored coin flip, the "
        "top-k guessed in and the bottom-k out by the named membership score), pure-DP form at the stated "
        "confidence; it recomputes from the stored (included, score) rows. For a non-DP cell it is the only privacy "
        "number, and the one that compares full fine-tuning and LoRA; the largest bound k guesses can show is "
        "capped (all correct), so a bound at the cap means 'at least this'. The verdict tables pair DP cells with "
        "their non-DP twins (DP-SGD rows) and methods at equal DP settings (method rows).",
        tables={"privacy": priv_rows}, figures={"privacy_vs_utility": priv_fig})] if priv_rows else []
    matched = matched_rows(rows, METRICS, UTILITY)
    at_matched = [Section(
        "Memorization: leakage at matched held-out NLL (interpolated)",
        "Each method run at several budgets (learning rates, epochs or steps) traces, per seed, a curve of leakage "
        "against held-out NLL; the curves are compared at three held-out NLL values (quartiles and midpoint of the "
        "range that every seed of both methods covers), each method's leakage linearly interpolated between its own "
        "budgets (never extrapolated). Per-seed differences (method − full fine-tuning) are in `diffs`; Holm over "
        "each metric's rows, TOST at the metric's margin. Where the methods' NLL ranges do not overlap they are not "
        "compared: a method that never reaches the other's utility cannot be said to leak less at it.",
        tables={"matched_utility": matched})] if matched else []
    return [
        Section("Memorization: verdicts", text, tables={"findings": findings_table}),
        *at_matched,
        *privacy,
        Section("Memorization: groups over seeds",
                "One row per configuration (every config field but the seed): mean, sample std (ddof=1) and 95% "
                "t interval over seeds. ROC curves are drawn from the stored per-record scores (members are "
                "positives) on log-log axes, as mimir and ML Privacy Meter draw them; the table gives AUC and TPR "
                "at 0.1%, 1% and 10% FPR as stored. In the leakage-vs-utility plot the dashed step is the Pareto "
                "front (no other configuration has both lower perplexity and lower leakage).",
                tables={"groups": group_rows(gs, shown, ctx), "extraction_by_duplication": dup_rows,
                        "exposure_by_insertions": exp_rows, "mia": roc_rows, "leakage_vs_utility": lu_rows},
                figures=figures),
    ]
