"""`lorasec scan` and `lorasec scan-fit` (issue 33) on a real bank of tiny-BERT adapters, and the detector's
evaluation splits checked for leakage (no test adapter is ever trained on)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CFG
from typer.testing import CliRunner

from lorasec.cli import app
from lorasec.metrics import adapter_detector as ad

runner = CliRunner()


@pytest.fixture(scope="module")
def bank_store(tmp_path_factory):
    from lorasec.audit import audit
    from lorasec.tasks import parse_config

    store = tmp_path_factory.mktemp("bank") / "bank.db"
    for seed in (1, 2, 3):
        for attack in ({"kind": "none"}, {"kind": "prefix", "rate": 0.3, "trigger": "cf", "target": 1},
                       {"kind": "rare_word", "rate": 0.3, "trigger": "cf", "target": 1}):
            raw = copy.deepcopy(TINY_CFG) | {"seed": seed, "attack": attack,
                                             "analyses": [{"kind": "adapter_export"}, {"kind": "adapter_features"}]}
            audit(parse_config(raw), store, progress=False)
    return store


def _adapter_dir(store):
    import sqlite3

    from lorasec.store import artifacts_dir

    key = sqlite3.connect(store).execute("SELECT key FROM runs WHERE label LIKE '%prefix%' LIMIT 1").fetchone()[0]
    return artifacts_dir(store, key) / "adapter"


def test_scan_fit_then_scan_gives_a_verdict_probability_and_drivers(bank_store, tmp_path):
    det, table = tmp_path / "d.json", tmp_path / "scan.md"
    res = runner.invoke(app, ["scan-fit", str(bank_store), "--detector", str(det), "--table", str(table)])
    assert res.exit_code == 0, res.output
    d = json.loads(det.read_text())
    assert d["fitted_on"]["attacks"] == {"none": 3, "prefix": 3, "rare_word": 3} and len(d["coef"]) == len(d["names"])
    md = table.read_text()
    assert "leave attack out: prefix" in md and "leave attack out: rare_word" in md and "random" in md
    res = runner.invoke(app, ["scan", "tiny-bert", str(_adapter_dir(bank_store)), "--detector", str(det), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["verdict"] in ("clean", "backdoored") and 0 <= out["probability"] <= 1
    assert (out["verdict"] == "backdoored") == (out["probability"] >= out["threshold"])
    assert len(out["drivers"]) == 5 and set(out["drivers"]) <= set(d["names"])
    assert d["fitted_on"]["base_models"] == ["tiny-bert"] and "warning" not in out
    assert out["score"] == pytest.approx(float(np.log(out["probability"] / (1 - out["probability"]))
                                                - d["calibration"][1]) / d["calibration"][0], rel=1e-6)
    res = runner.invoke(app, ["scan", "tiny-bert", str(_adapter_dir(bank_store)), "--detector", str(det)])
    assert res.exit_code == 0 and "per module type" in res.stdout


def test_scan_fit_leave_out_fits_without_that_attack(bank_store, tmp_path):
    det = tmp_path / "d.json"
    res = runner.invoke(app, ["scan-fit", str(bank_store), "--detector", str(det), "--leave-out", "rare_word"])
    assert res.exit_code == 0, res.output
    assert json.loads(det.read_text())["fitted_on"]["attacks"] == {"none": 3, "prefix": 3}
    for bad in ("style", "none"):
        res = runner.invoke(app, ["scan-fit", str(bank_store), "--detector", str(tmp_path / "x.json"),
                                  "--leave-out", bad])
        assert res.exit_code == 2 and f"--leave-out: {bad!r}" in res.stderr and "prefix, rare_word" in res.stderr
        assert not (tmp_path / "x.json").exists()


def test_scan_refuses_bad_input_in_one_line(bank_store, tmp_path):
    det = tmp_path / "d.json"
    runner.invoke(app, ["scan-fit", str(bank_store), "--detector", str(det)])
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text('{"r": 4, "lora_alpha": 8}')
    (pickled / "adapter_model.bin").write_bytes(b"never loaded")
    cases = [
        (["scan", "tiny-bert", str(pickled), "--detector", str(det)], "is a pickle file"),
        (["scan", "minilm", str(_adapter_dir(bank_store)), "--detector", str(det)], "is not a linear layer"),
        (["scan", "gpt5", str(_adapter_dir(bank_store)), "--detector", str(det)], "base: 'gpt5'"),
        (["scan", "tiny-bert", str(_adapter_dir(bank_store)), "--detector", str(tmp_path / "no.json")],
         "--detector"),
        (["scan-fit", str(tmp_path / "none.db"), "--detector", str(det)], "does not exist"),
    ]
    for args, expected in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert len(res.stderr.strip().splitlines()) == 1 and expected in res.stderr, res.stderr


def _synthetic(n: int = 60, seed: int = 0) -> ad.Bank:
    rng = np.random.default_rng(seed)
    attack = np.array(["none"] * n + ["prefix"] * n + ["style"] * n)
    y = (attack != "none").astype(int)
    x = rng.normal(size=(3 * n, 3))
    x[attack == "prefix", 0] += 4.0  # prefix shows in feature 0 only, style in feature 1 only
    x[attack == "style", 1] += 4.0
    return ad.Bank(x, y, ["f0", "f1", "f2"], attack, np.array((["a", "b"] * (3 * n))[:3 * n]),
                   np.array(([4, 16, 64] * n)[:3 * n]), [str(i) for i in range(3 * n)])


def test_splits_never_test_on_a_trained_adapter_and_leave_the_attack_out():
    b = _synthetic()
    for name, folds in ad.splits(b).items():
        for train, test in folds:
            assert not set(train) & set(test), name
            if name.startswith("leave attack out: "):
                held = name.removeprefix("leave attack out: ")
                assert held not in set(b.attack[train]) and set(b.attack[test]) == {held, "none"}


def test_a_detector_trained_on_one_attack_fails_on_another_and_the_evaluation_says_so():
    rows = {r["split"]: r for r in ad.evaluate(_synthetic(), n_boot=200)}
    assert rows["random (stratified 5-fold)"]["auc"] > 0.85
    # held-out style: trained on prefix (feature 0) only, it cannot see style's shift in feature 1
    assert rows["leave attack out: style"]["auc"] < 0.75
    assert rows["random (stratified 5-fold)"]["auc"] - rows["leave attack out: style"]["auc"] > 0.15
    assert rows["leave attack out: style"]["auc_lo"] <= rows["leave attack out: style"]["auc"]


def test_tpr_at_one_percent_fpr_by_brute_force():
    rng = np.random.default_rng(2)
    y = np.array([0] * 300 + [1] * 100)
    s = rng.normal(size=400) + y
    best = max(((s[y == 1] >= t).mean() for t in np.unique(s) if (s[y == 0] >= t).mean() <= 0.01), default=0.0)
    assert ad.tpr_at(y, s) == pytest.approx(best)


def test_run_says_where_the_exported_adapter_is(tmp_path):
    import yaml

    cfg = tmp_path / "cell.yaml"
    cfg.write_text(yaml.safe_dump(copy.deepcopy(TINY_CFG) | {"analyses": [{"kind": "adapter_export"}]}))
    store = tmp_path / "one.db"
    res = runner.invoke(app, ["run", str(cfg), "--store", str(store)])
    assert res.exit_code == 0, res.output
    said = "".join(res.stdout.split())  # rich may wrap a long path
    import sqlite3

    from lorasec.store import artifacts_dir

    for like, what in (("%prefix%", "prefix(0.05):"), ("%none%", "itscleanbaseline:")):
        key = sqlite3.connect(store).execute("SELECT key FROM runs WHERE label LIKE ?", (like,)).fetchone()[0]
        where = artifacts_dir(store, key).resolve() / "adapter"
        assert f"{what}weightssavedin{where}" in said and (where / "adapter_config.json").is_file()


def test_the_single_statistic_baseline_is_chosen_on_training_rows_not_on_the_test():
    rows = {r["split"]: r for r in ad.evaluate(_synthetic(), n_boot=50)}
    held = rows["leave attack out: style"]
    # trained on prefix, whose shift is in f0: f0 is chosen, and it cannot see style (f1 would, but only the
    # test adapters say so)
    assert held["best single statistic"] == "f0" and held["its AUC"] < 0.75
    assert rows["leave attack out: prefix"]["best single statistic"] == "f1"


def test_platt_calibration_and_the_threshold_come_from_out_of_fold_scores():
    b = _synthetic()
    det = ad.fit(b)
    a, c = det.calibration
    assert a > 0 and 0 < det.threshold < 1
    oof = ad._out_of_fold_logits(b, 0)
    prob = 1 / (1 + np.exp(-(a * oof + c)))
    assert det.threshold == pytest.approx(np.quantile(prob[b.y == 0], 0.99))
    in_sample = np.array([det.logit(dict(zip(b.names, row, strict=True))) for row in b.x])
    assert not np.allclose(in_sample, oof)  # the threshold is not read off scores of adapters it was fitted on
    assert det.card["out_of_fold"]["brier"] == pytest.approx(float(np.mean((prob - b.y) ** 2)))


ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_detector_and_docs_scan_recompute_from_the_committed_bank():
    """lorasec/configs/scan_detector.json and docs/SCAN.md were written by `lorasec scan-fit study/adapters.sqlite`:
    refitting on the committed store gives the same coefficients, and every split's AUC in docs/SCAN.md recomputes
    (bootstrap intervals aside)."""
    import re

    from lorasec.cli import SHIPPED_DETECTOR
    from lorasec.report import load

    shipped = ad.Detector.from_json(SHIPPED_DETECTOR)
    assert sum(shipped.fitted_on["attacks"].values()) >= 200 and shipped.fitted_on["base_models"] == ["minilm"]
    assert shipped.card["held_out"] and "known_to_fail" in shipped.card
    rows, _, _ = load(ROOT / "study" / "adapters.sqlite")
    b = ad.bank(rows)
    evaluation = ad.evaluate(b, n_boot=5)
    refit = ad.fit(b, 0, evaluation)
    assert refit.names == shipped.names
    assert np.allclose(refit.coef, shipped.coef, rtol=1e-3, atol=1e-4)
    assert refit.threshold == pytest.approx(shipped.threshold, abs=1e-3)
    doc = (ROOT / "docs" / "SCAN.md").read_text()
    for r in evaluation:
        m = re.search(rf"^\| {re.escape(r['split'])} \| (\d+) / (\d+) \| ([0-9.]+) \[", doc, re.M)
        assert m, r["split"]
        assert (int(m[1]), int(m[2])) == (r["n_backdoored"], r["n_clean"])
        assert float(m[3]) == pytest.approx(r["auc"], abs=2e-3)


def test_scan_with_the_shipped_detector_warns_outside_its_base_model(bank_store):
    from lorasec.cli import SHIPPED_DETECTOR

    res = runner.invoke(app, ["scan", "tiny-bert", str(_adapter_dir(bank_store)), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["detector"] == str(SHIPPED_DETECTOR) and "fitted on adapters of minilm" in out["warning"]
