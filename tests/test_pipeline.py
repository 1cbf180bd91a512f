"""A tiny model end to end: run, store, reuse, and recompute every stored number from the stored outputs."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

import lorasec
from lorasec.audit import audit
from lorasec.data import load_splits
from lorasec.store import config_key, load, open_store
from lorasec.tasks import parse_config


def run(cfg, progress=False) -> dict:
    return lorasec.run(cfg, progress=progress).record


def test_tiny_run_end_to_end_result_is_recomputable(tiny_cfg, tmp_path):
    cfg = parse_config(tiny_cfg)
    store = tmp_path / "r.db"
    result = audit(cfg, store, progress=False)
    assert result["cached"] is False
    con = open_store(store)
    stored = load(con, config_key(cfg))
    assert stored is not None and stored["key"] == result["key"]
    # the attacked cell carries its clean baseline, which is stored as its own row
    base = load(con, stored["baseline"]["key"])
    assert base is not None and base["config"]["attack"] == {"kind": "none"}
    assert stored["baseline"]["clean"] == base["metrics"]["clean"]

    # clean metrics from per-sample outputs
    out = stored["outputs"]["clean"]
    y, p = np.array(out["labels"]), np.array(out["preds"])
    assert np.array_equal(p, np.array(out["probs"]).argmax(1))
    assert stored["metrics"]["clean"]["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert stored["metrics"]["clean"]["f1"] == pytest.approx(f1_score(y, p, average="binary", zero_division=0))
    # backdoor metrics from the triggered outputs
    trig = stored["outputs"]["triggered"]
    tp = np.array(trig["preds"])
    assert np.all(np.array(trig["labels"]) != 1)
    assert all(t.startswith("cf ") for t in trig["texts"])
    assert stored["metrics"]["backdoor"]["asr"] == pytest.approx(np.mean(tp == 1))
    # the poisoned rows are named by their source ids and can be checked against the training split
    splits = load_splits(cfg.data, cfg.seed)
    train_ids = set(splits.train.ids.tolist())
    assert stored["data"]["train_ids"] == splits.train.ids.tolist()
    assert len(stored["poisoned"]["ids"]) == round(0.05 * len(splits.train))
    assert set(stored["poisoned"]["ids"]) <= train_ids
    assert all(lbl == 1 for lbl in stored["poisoned"]["trained_labels"])
    by_id = dict(zip(splits.train.ids.tolist(), splits.train.texts, strict=True))
    assert all(t == f"cf {by_id[i]}" for i, t in stored["poisoned"]["trained_texts"].items())
    # provenance
    assert stored["config"] == cfg.model_dump(mode="json")
    assert stored["environment"]["versions"]["torch"]
    assert stored["model"]["trainable_params"] > 0 and len(stored["train"]["losses"]) == 8

    # a second audit reuses the stored row
    again = audit(cfg, store, progress=False)
    assert again["cached"] is True
    assert sqlite3.connect(store).execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2


def test_same_seed_same_metrics(tiny_cfg):
    cfg = parse_config(tiny_cfg | {"method": {"kind": "full"}})
    a, b = run(cfg, progress=False), run(cfg, progress=False)
    assert a["metrics"] == b["metrics"]
    assert a["train"]["losses"] == b["train"]["losses"]
    assert a["outputs"]["clean"]["probs"] == b["outputs"]["clean"]["probs"]


def test_changing_the_attack_keeps_the_batch_order_and_head_init(tiny_cfg):
    a = parse_config(tiny_cfg)
    b = parse_config(tiny_cfg | {"attack": {"kind": "label_flip", "rate": 0.0}})
    ra, rb = run(a, progress=False), run(b, progress=False)
    assert ra["seeds"]["train"] == rb["seeds"]["train"] and ra["seeds"]["head"] == rb["seeds"]["head"]


def test_stored_json_is_strict(tiny_cfg, tmp_path):
    cfg = parse_config(tiny_cfg | {"attack": {"kind": "none"}})
    audit(cfg, tmp_path / "s.db", progress=False)
    (body,) = sqlite3.connect(tmp_path / "s.db").execute("SELECT result FROM runs").fetchone()
    json.loads(body, parse_constant=lambda c: pytest.fail(f"non-finite number {c} stored"))


def test_backdoor_floor_rates_recompute_from_outputs(tiny_cfg, tmp_path):
    r = audit(parse_config(tiny_cfg), tmp_path / "f.db", progress=False)
    con = open_store(tmp_path / "f.db")
    base = load(con, r["baseline"]["key"])
    for rec, stored in ((r, r["metrics"]["backdoor"]["clean_to_target"]), (base, r["baseline"]["clean_to_target"])):
        y = np.array(rec["outputs"]["clean"]["labels"])
        p = np.array(rec["outputs"]["clean"]["preds"])
        assert stored == pytest.approx(np.mean(p[y != 1] == 1))


def test_encode_counts_cut_rows_and_keeps_the_closing_sep():
    from transformers import AutoTokenizer

    from lorasec.models.weights import minilm_dir
    from lorasec.train import encode

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    enc = encode(tok, ["short one", " ".join(["word"] * 50)], max_length=16)
    assert enc.truncated == 1
    assert len(enc.input_ids[1]) == 16 and enc.input_ids[1][-1] == tok.sep_token_id
    assert enc.input_ids[0] == tok("short one")["input_ids"]
