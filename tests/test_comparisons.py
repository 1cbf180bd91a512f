"""Comparisons declared as data (lorasec.tasks.evidence.Comparing): the method is one declaration, a defense another,
a study adds its own with `--compare FIELD=REFERENCE`; which metric reads a row follows what the row holds, not the
attack's name. Every difference is checked against a brute-force recomputation from the rows."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lorasec.report import build
from lorasec.store import config_key, open_store, save
from lorasec.tasks import parse_config
from lorasec.tasks.classification import report as cls_report
from lorasec.tasks.evidence import Comparing, Metric, findings, flatten

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("report_500", ROOT / "benchmarks" / "report_500.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rekey(row: dict, raw_config: dict) -> dict:
    cfg = parse_config(raw_config)
    return row | {"key": config_key(cfg), "label": cfg.label(), "config": cfg.model_dump(mode="json")}


def defended_rows(seeds: int = 4) -> list[dict]:
    """Synthetic full / LoRA cells under a prefix backdoor, each seed twice: undefended and with a keyword filter
    whose (made-up) ASR is lower by a seed-dependent amount."""
    rng = np.random.default_rng(7)
    rows = [r for r in _bench().synthetic_rows(28 * seeds)
            if r["config"]["attack"]["kind"] in ("none", "prefix")
            and r["config"]["method"]["kind"] in ("full", "lora")]
    out = []
    for r in rows:
        out.append(r)
        if r["config"]["attack"]["kind"] == "prefix":
            raw = copy.deepcopy(r["config"])
            raw["defense"] = {"kind": "keyword", "words": ["cf"]}
            d = _rekey(copy.deepcopy(r), raw)
            d["metrics"]["backdoor"]["asr"] = r["metrics"]["backdoor"]["asr"] - rng.uniform(0.25, 0.3)  # may go < 0
            out.append(d)
    return out


def _brute(rows: list[dict], treated: dict, reference: dict, context: dict, value) -> list[float]:
    """treated - reference per seed, found by scanning every row (no pairing code)."""
    def side(want: dict) -> dict[int, float]:
        out = {}
        for r in rows:
            flat = flatten(r["config"])
            if all(flat.get(k) == v for k, v in (want | context).items()) and value(r) is not None:
                out[flat["seed"]] = value(r)
        return out
    t, ref = side(treated), side(reference)
    return [t[s] - ref[s] for s in sorted(set(t) & set(ref))]


def test_defended_vs_undefended_is_a_declaration_and_its_differences_recompute():
    rows = defended_rows()
    found, comps = cls_report.comparison_rows(rows, (cls_report.DEFENSE,))
    # full, LoRA r=4, r=16 x three prefix rates, x two metrics (ASR after the defense, CACC after the defense)
    assert len(found) == 3 * 3 * 2
    values = {"ASR after the defense − floor": cls_report.net_asr_after, "CACC after the defense": cls_report.cacc}
    for f, c in zip(found, comps, strict=True):
        assert f["metric"] in values and f["comparison"].startswith("keyword (")
        assert f["paper claim"] == "" and f["claim"] == ""  # the paper claims nothing about defenses
        assert c.context["method.kind"] in ("full", "lora")  # the method is held equal, not compared
        assert cls_report.method_label(c.context, []) in f["setting"]
        held = {k: c.context.get(k) for k in ("method.kind", "method.rank", "attack.rate")}
        want = _brute(rows, c.treated, c.reference, held, values[f["metric"]])
        assert c.diffs == pytest.approx(want) and len(want) == 4
        assert f["difference mean"] == pytest.approx(np.mean(want))
        if f["metric"].startswith("ASR"):
            assert f["verdict"] == f["comparison"].split(" − ")[0] + " more robust"
        else:
            assert f["difference mean"] == 0  # the synthetic defense leaves clean accuracy alone
    # the method comparison still pairs only cells with the same defense, each defense separately
    method_rows, method_comps = cls_report.comparison_rows(rows, (cls_report.METHOD,))
    assert {c.context.get("defense.kind") for c in method_comps} == {"none", "keyword"}
    assert {f["comparison"] for f in method_rows} == {"LoRA r=4 − full FT", "LoRA r=16 − full FT"}


def test_a_defenses_effect_is_compared_between_methods_as_a_difference_of_differences():
    rows = defended_rows()
    found, comps = cls_report.comparison_rows(rows, (cls_report.DEFENSE_BY_METHOD,))
    asr_rows = [(f, c) for f, c in zip(found, comps, strict=True) if f["metric"] == "defense's change in ASR − floor"]
    assert len(asr_rows) == 2 * 3  # LoRA r=4 and r=16 against full FT, three prefix rates
    for f, c in asr_rows:
        assert f["comparison"] in ("LoRA r=4 − full FT", "LoRA r=16 − full FT")
        assert c.context["defense.kind"] == "keyword"
        # brute force: (defended - undefended) of LoRA minus (defended - undefended) of full, per seed
        rate = c.context["attack.rate"]

        def effect(method: dict, rate: float = rate) -> dict[int, float]:
            out: dict[int, dict[str, float]] = {}
            for r in rows:
                flat = flatten(r["config"])
                if flat["attack.kind"] == "prefix" and flat["attack.rate"] == rate and all(
                        flat.get(k) == v for k, v in method.items()):
                    out.setdefault(flat["seed"], {})[flat["defense.kind"]] = cls_report.net_asr_after(r)
            return {s: v["keyword"] - v["none"] for s, v in out.items()}

        lora, full = effect(c.treated), effect(c.reference)
        want = [lora[s] - full[s] for s in sorted(set(lora) & set(full))]
        assert c.diffs == pytest.approx(want) and len(want) == 4


def test_the_report_shows_both_declarations(tmp_path):
    rows = defended_rows(3)
    store = tmp_path / "d.db"
    con = open_store(store)
    for r in rows:
        save(con, r)
    con.close()
    section = next(s for s in build(store) if s.title == "Classification: verdicts")
    comparisons = {f["comparison"].split(" − ")[1] for f in section.tables["findings"]}
    assert comparisons == {"full FT", "none"}
    assert "Further rows compare other declared variables (defense, defense effect by method)" in section.text
    assert "does LoRA make the defense more or less effective" in section.text


def test_metric_follows_what_the_row_holds_not_the_attack_name():
    """A trigger attack without a rate and under another name is read by ASR; an attack on labels only (no
    triggered metrics) by ΔCACC; the old rule made every non-label-flip attack a backdoor needing a rate."""
    rows = [r for r in _bench().synthetic_rows(28 * 3) if r["config"]["method"]["kind"] in ("full", "lora")]
    for r in rows:
        a = r["config"]["attack"]
        if a["kind"] == "prefix":
            a.pop("rate")
            a["kind"] = "some_new_trigger"
        elif a["kind"] == "label_flip":
            a["kind"] = "some_label_attack"
    found, comps = cls_report.comparison_rows(rows, (cls_report.METHOD,))
    by_metric: dict[str, set] = {}
    for f, c in zip(found, comps, strict=True):
        by_metric.setdefault(f["metric"], set()).add(c.context["attack.kind"])
    assert by_metric == {"clean accuracy (no attack)": {"none"}, "ΔCACC vs clean baseline": {"some_label_attack"},
                         "ASR − no-trigger floor": {"some_new_trigger"}}
    trig = [f for f in found if f["metric"] == "ASR − no-trigger floor"]
    # three prefix rates collapse into one context once the rate is gone: each seed then has three cells per side
    # and the pairing keeps one per seed; the setting names no rate
    assert trig and all("rate" not in f["setting"] for f in trig)


def test_a_new_declaration_needs_no_evidence_code():
    """Rank 4 against rank 16 among LoRA cells, declared here in five lines."""
    rows = _bench().synthetic_rows(28 * 3)
    rank = Comparing("rank", ("method.rank",), {"method.rank": 16},
                     (Metric("CACC", cls_report.cacc, True, "more accurate", "less accurate"),))
    found, comps = findings(rows, (rank,), lambda d, c, ctx: c.context["attack.kind"])
    assert len(found) == 7  # one per attack setting
    for f, c in zip(found, comps, strict=True):
        assert f["comparison"] == "method.rank=4 − method.rank=16"
        assert c.diffs == pytest.approx(_brute(rows, {"method.rank": 4}, {"method.rank": 16},
                                               {k: v for k, v in c.context.items() if k.startswith("attack.")},
                                               cls_report.cacc))


def _synthetic_store(tmp_path) -> Path:
    """The report benchmark's synthetic classification cells (3 seeds), stored."""
    store = tmp_path / "s.db"
    con = open_store(store)
    for r in _bench().synthetic_rows(28 * 3):
        save(con, r)
    con.close()
    return store


def test_compare_option_on_the_command_line(tmp_path):
    store = _synthetic_store(tmp_path)
    section = next(s for s in build(store, ["method.rank=16"]) if s.title == "Classification: verdicts")
    extra = [f for f in section.tables["findings"] if f["comparison"] == "method.rank=4 − method.rank=16"]
    assert len(extra) == 7  # CACC on clean, ΔCACC on three label-flip rates, ASR on three prefix rates
    assert {f["metric"] for f in extra} == {m.name for m in cls_report.METRICS}
    bad = subprocess.run([sys.executable, "-m", "lorasec.cli", "report", str(store), "--out", str(tmp_path / "o"),
                          "--compare", "method.nope=3"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--compare: 'method.nope' is in no stored config" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_show_counts_rows_of_an_older_schema(tmp_path):
    """A row stored under schema 1 is kept, not shown in the table, and counted in one line."""
    rows: list[dict] = []
    old = copy.deepcopy(_bench().synthetic_rows(1)[0])
    old["config"]["schema_version"] = 1
    old["key"] = "0" * 64
    store = tmp_path / "s.db"
    con = open_store(store)
    for r in [*rows, old]:
        save(con, r)
    con.close()
    out = subprocess.run([sys.executable, "-m", "lorasec.cli", "show", "--store", str(store)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert "1 row of an older config schema (before 2)" in " ".join(out.stdout.split())


def test_compare_over_several_fields_moves_them_together():
    """`--compare train.precision=fp32,train.optimizer=adamw`: one declaration whose treatment is both fields, so a
    bf16+fused cell pairs with the fp32+adamw cell of the same seed; a malformed part is one line."""
    from lorasec.errors import InputError
    from lorasec.report import parse_compare
    from lorasec.tasks.classification.report import study

    rows = [{"config": {"train": {"precision": "fp32", "optimizer": "adamw"}, "seed": 1}}]
    spec = parse_compare(["train.precision=fp32,train.optimizer=adamw"], rows)
    assert spec == ((("train.precision", "fp32"), ("train.optimizer", "adamw")),)
    decl = study(spec)[-1]
    assert decl.fields == ("train.precision", "train.optimizer")
    assert decl.is_reference({"train.precision": "fp32", "train.optimizer": "adamw"})
    assert not decl.is_reference({"train.precision": "bf16", "train.optimizer": "adamw_fused"})
    # a JSON reference value may hold commas: they do not split the spec
    listed = [{"config": {"method": {"targets": ["query", "value"]}, "train": {"precision": "fp32"}, "seed": 1}}]
    assert parse_compare(['method.targets=["query","value"],train.precision=fp32'], listed) == (
        (("method.targets", ["query", "value"]), ("train.precision", "fp32")),)
    with pytest.raises(InputError, match=r"^--compare: 'train.precision=fp32,oops' is not FIELD=REFERENCE"):
        parse_compare(["train.precision=fp32,oops"], rows)


def test_margin_option_sets_the_equivalence_margin_of_the_metrics_it_names(tmp_path):
    from scipy.stats import t as student_t

    store = _synthetic_store(tmp_path)

    def asr_rows(margin):
        sec = next(s for s in build(store, margin=margin) if s.title == "Classification: verdicts")
        return [f for f in sec.tables["findings"] if f["metric"].startswith("ASR")]

    default, wide = asr_rows(()), asr_rows(["asr=5"])  # case-insensitive part of the metric's name
    assert default and {f["margin"] for f in default} == {0.05} and {f["margin"] for f in wide} == {5.0}
    for f in wide:  # TOST recomputed by hand: max of the two one-sided t p-values at ±5 (before Holm)
        n, m, sd = f["n"], f["difference mean"], f["difference std"]
        se = sd / np.sqrt(n)
        p = max(student_t.sf((m + 5) / se, n - 1), student_t.cdf((m - 5) / se, n - 1))
        assert f["TOST p (Holm)"] >= p - 1e-12
    assert sum(f["verdict"].startswith("equivalent") for f in wide) > sum(
        f["verdict"].startswith("equivalent") for f in default)
    sec = next(s for s in build(store, margin=["ASR=0.9"]) if s.title == "Classification: verdicts")
    assert all(f["margin"] == 0.02 for f in sec.tables["findings"] if f["metric"].startswith("clean accuracy"))
    for bad, said in ((["nothing=0.1"], "--margin: 'nothing' names no metric"), (["ASR=-1"], "VALUE > 0"),
                      (["ASR"], "NAME=VALUE")):
        res = subprocess.run([sys.executable, "-m", "lorasec.cli", "report", str(store), "--out",
                              str(tmp_path / "o"), "--margin", *bad], capture_output=True, text=True)
        assert res.returncode == 2 and said in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
