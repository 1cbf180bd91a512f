"""A tiny model end to end: run, store, reuse, and recompute every stored number from the stored outputs."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

import lorasec
from lorasec.audit import audit
from lorasec.data import load_splits
from lorasec.seeds import stage_seeds
from lorasec.store import config_key, load, open_store
from lorasec.tasks import TASKS, parse_config


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
    label_of = dict(zip(splits.train.ids.tolist(), splits.train.labels.tolist(), strict=True))
    assert stored["poisoned"]["original_labels"] == [label_of[i] for i in stored["poisoned"]["ids"]]
    by_id = dict(zip(splits.train.ids.tolist(), splits.train.texts, strict=True))
    assert all(t == f"cf {by_id[i]}" for i, t in stored["poisoned"]["trained_texts"].items())
    # provenance
    assert stored["config"] == cfg.model_dump(mode="json")
    assert stored["environment"]["versions"]["torch"]
    assert len(stored["train"]["losses"]) == 8
    assert stored["seeds"] == stage_seeds(3, TASKS.get("classification").stages)
    # LoRA r=4 (A: 4 x d_in, B: d_out x 4) on every linear of a 2-layer, 32-wide BERT (q, k, v, attention out,
    # 32->128, 128->32 per layer, and the pooler), plus the new 2-way head (weight and bias) trained in full
    per_layer = [(32, 32)] * 4 + [(32, 128), (128, 32)]
    lora = 2 * sum(4 * (i + o) for i, o in per_layer) + 4 * (32 + 32)
    assert stored["model"]["trainable_params"] == lora + (32 * 2 + 2)

    # a second audit reuses the stored row: the same numbers, no run
    again = audit(cfg, store, progress=False)
    assert again["cached"] is True
    assert again["metrics"] == result["metrics"] and again["outputs"] == result["outputs"]
    assert sqlite3.connect(store).execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2


def test_same_seed_same_metrics_and_the_seed_matters(tiny_cfg):
    cfg = parse_config(tiny_cfg | {"method": {"kind": "full"}})
    a, b = run(cfg, progress=False), run(cfg, progress=False)
    assert a["metrics"] == b["metrics"]
    assert a["train"]["losses"] == b["train"]["losses"]
    assert a["outputs"]["clean"]["probs"] == b["outputs"]["clean"]["probs"]
    other = run(parse_config(tiny_cfg | {"method": {"kind": "full"}, "seed": 4}), progress=False)
    assert other["train"]["losses"] != a["train"]["losses"]


def test_the_attack_stage_does_not_move_head_init_or_batch_order(tiny_cfg):
    """A label flip that flips nothing trains on the same data as no attack: with the attack's own seed
    separate from the head's, the batch order's and the adapters', every number is the same."""
    clean = run(parse_config(tiny_cfg | {"attack": {"kind": "none"}}), progress=False)
    noop = run(parse_config(tiny_cfg | {"attack": {"kind": "label_flip", "rate": 0.0}}), progress=False)
    assert noop["poisoned"]["ids"] == []
    assert noop["train"]["losses"] == clean["train"]["losses"]
    assert noop["outputs"]["clean"] == clean["outputs"]["clean"]


def test_stored_probabilities_are_the_models_own_row_by_row(tiny_cfg):
    """Each stored probability row is what the trained model gives that test row alone, tokenised by the
    tokenizer's own truncation: batching, length sorting and padding change nothing, row order is kept."""
    from transformers import AutoTokenizer

    from lorasec.models.weights import minilm_dir

    cfg = parse_config(tiny_cfg)
    ran = lorasec.run(cfg, progress=False, keep_model=True)
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    splits = load_splits(cfg.data, cfg.seed)
    out, trig = ran.record["outputs"]["clean"], ran.record["outputs"]["triggered"]
    assert out["ids"] == splits.test.ids.tolist() and out["labels"] == splits.test.labels.tolist()
    for stored, texts in ((out, splits.test.texts), (trig, trig["texts"])):
        for i, text in enumerate(texts):
            enc = tok(text, truncation=True, max_length=cfg.eval.max_length, return_tensors="pt")
            with torch.no_grad():
                probs = torch.softmax(ran.model(**enc).logits[0].double(), -1).numpy()
            assert np.allclose(probs, stored["probs"][i], atol=2e-6), i
            assert stored["preds"][i] == int(np.argmax(probs))


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


def test_table_rows_read_the_baseline(tiny_cfg, tmp_path):
    from lorasec.tasks.classification.table import row

    r = audit(parse_config(tiny_cfg), tmp_path / "t.db", progress=False)
    base = load(open_store(tmp_path / "t.db"), r["baseline"]["key"])
    flat = row(r)
    y = np.array(base["outputs"]["clean"]["labels"])
    p = np.array(base["outputs"]["clean"]["preds"])
    assert flat["delta_cacc"] == pytest.approx(r["metrics"]["clean"]["accuracy"] - np.mean(y == p))
    assert flat["base_to_target"] == pytest.approx(np.mean(p[y != 1] == 1))
    assert flat["asr"] == r["metrics"]["backdoor"]["asr"] and flat["seed"] == 3


# ---------------------------------------------------------------- the store: resume, force, failures
def counting_execute(monkeypatch) -> list[str]:
    """Wrap the real engine to record which cells actually ran (no behaviour changed)."""
    import lorasec.audit as engine

    ran: list[str] = []
    real = engine.execute

    def spy(cfg, progress=True, keep_model=False, store=None):
        ran.append(cfg.label())
        return real(cfg, progress, keep_model, store)

    monkeypatch.setattr(engine, "execute", spy)
    return ran


def test_a_partly_filled_store_reuses_the_shared_baseline(tiny_cfg, tmp_path, monkeypatch):
    from lorasec.audit import audit_all

    store = tmp_path / "p.db"
    clean = parse_config(tiny_cfg | {"attack": {"kind": "none"}})
    first = audit(clean, store, progress=False)
    ran = counting_execute(monkeypatch)
    cells = [parse_config(tiny_cfg), parse_config(tiny_cfg | {"attack": {"kind": "label_flip", "rate": 0.3}}), clean]
    out = audit_all(cells, store, progress=False)
    assert sorted(ran) == ["lora(r=4) / label_flip(0.3)", "lora(r=4) / prefix(0.05)"]  # the baseline ran once, before
    assert all(r["baseline"]["clean"] == first["metrics"]["clean"] for r in out if "baseline" in r)
    assert sqlite3.connect(store).execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 3


def test_force_reruns_and_replaces_with_the_same_numbers(tiny_cfg, tmp_path, monkeypatch):
    store = tmp_path / "f.db"
    cfg = parse_config(tiny_cfg | {"attack": {"kind": "none"}})
    first = audit(cfg, store, progress=False)
    (created,) = sqlite3.connect(store).execute("SELECT created FROM runs").fetchone()
    ran = counting_execute(monkeypatch)
    again = audit(cfg, store, force=True, progress=False)
    assert ran == [cfg.label()] and again["cached"] is False
    (created2,) = sqlite3.connect(store).execute("SELECT created FROM runs").fetchone()
    assert created2 > created and load(open_store(store), first["key"])["metrics"] == first["metrics"]


def test_nothing_is_saved_when_any_run_of_a_cell_fails(tiny_cfg, tmp_path, monkeypatch):
    """The attacked cell trains fine, then its baseline fails: neither is stored (not even a store file)."""
    import lorasec.audit as engine

    real = engine.execute

    def baseline_fails(cfg, progress=True, keep_model=False, store=None):
        if cfg.attack.kind == "none":
            raise RuntimeError("baseline failed")
        return real(cfg, progress, keep_model, store)

    monkeypatch.setattr(engine, "execute", baseline_fails)
    with pytest.raises(RuntimeError, match="baseline failed"):
        audit(parse_config(tiny_cfg), tmp_path / "n.db", progress=False)
    assert not (tmp_path / "n.db").exists()
