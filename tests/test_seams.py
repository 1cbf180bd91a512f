"""The engine's seams (issue 30): every input in the key, lorasec's own source in each result, and the defend /
optimise / analyse stages as registries whose entries are one file each."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import lorasec
from lorasec.audit import audit
from lorasec.errors import InputError
from lorasec.store import artifacts_dir, config_key, open_store, results, schema_counts
from lorasec.tasks import parse_config

ROOT = Path(__file__).resolve().parents[1]


# --- keys ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task, raw", [
    ("classification", {"method": {"kind": "full"}}),
    ("memorization", {"task": "memorization", "model": {"name": "tiny-llama"}, "corpus": {"name": "sotu"},
                      "method": {"kind": "lora"}}),
])
def test_lr_null_and_the_default_written_out_are_one_key_and_a_new_default_is_a_new_key(task, raw, monkeypatch):
    import importlib

    module = importlib.import_module(f"lorasec.tasks.{task}")
    kind = raw["method"]["kind"]
    implicit = parse_config(raw)
    default = module.DEFAULT_LR[kind]
    assert implicit.train.lr == default  # resolved into the config itself, not at run time
    explicit = parse_config({**raw, "train": {"lr": default}})
    assert config_key(implicit) == config_key(explicit)
    assert implicit.model_dump()["train"]["lr"] == default

    monkeypatch.setitem(module.DEFAULT_LR, kind, default * 2)
    moved = parse_config(raw)
    assert moved.train.lr == default * 2 and config_key(moved) != config_key(implicit)
    assert config_key(parse_config({**raw, "train": {"lr": default}})) == config_key(explicit)  # stated lr: unmoved


def test_the_theory_probes_length_is_resolved_from_the_cell_and_keyed():
    raw = {"task": "theory", "cell": {"attack": {"kind": "prefix", "rate": 0.01}, "train": {"max_length": 64}}}
    cfg = parse_config(raw)
    assert cfg.probes.max_length == 64
    same = parse_config({**raw, "probes": {"max_length": 64}})
    assert config_key(cfg) == config_key(same)
    assert config_key(parse_config({**raw, "probes": {"max_length": 32}})) != config_key(cfg)


def test_resolving_a_default_never_changes_a_shared_default_instance():
    a = parse_config({"method": {"kind": "full"}})
    b = parse_config({"method": {"kind": "lora"}})
    assert (a.train.lr, b.train.lr) == (5e-5, 5e-4)
    from lorasec.config import TrainConfig

    assert TrainConfig().lr is None


def test_a_config_of_an_older_schema_is_refused_in_one_line():
    with pytest.raises(InputError, match=r"^config: schema_version: .*2"):
        parse_config({"schema_version": 1})


def test_every_result_records_lorasec_version_source_hash_and_commit(tiny_cfg):
    rec = lorasec.run(parse_config(tiny_cfg | {"attack": {"kind": "none"}}), progress=False).record
    src = rec["environment"]["lorasec"]
    assert src["version"] == lorasec.__version__
    assert re.fullmatch(r"[0-9a-f]{64}", src["source_sha256"])
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", src["commit"]) and isinstance(src["dirty"], bool)


def test_rows_of_an_older_schema_are_counted_never_reused_and_left_out_of_the_report(tiny_cfg, tmp_path):
    from lorasec.report import build

    store = tmp_path / "s.db"
    cfg = parse_config(tiny_cfg | {"attack": {"kind": "none"}})
    fresh = audit(cfg, store, progress=False)
    con = open_store(store)
    old = json.loads(con.execute("SELECT result FROM runs").fetchone()[0])
    old["config"]["schema_version"] = 1
    old["key"] = "0" * 64
    with con:
        con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)", (old["key"], "classification", old["label"],
                    json.dumps(old["config"]), json.dumps(old), 0.0))
    assert schema_counts(con) == {1: 1, 2: 1}
    assert [r["key"] for r in results(con, schema=2)] == [fresh["key"]]
    con.close()
    assert audit(cfg, store, progress=False)["cached"] is True  # the current row, not the old one
    overview = build(store)[0].text
    assert "1 stored cell." in overview and "1 row of an older config schema" in overview


# --- optimizers ------------------------------------------------------------------------------------------------


def test_fused_adamw_is_one_file_and_trains_like_adamw_to_float_rounding(tiny_cfg):
    from lorasec.optimizers import OPTIMIZERS

    assert "adamw_fused" in OPTIMIZERS
    mentions = [p.relative_to(ROOT).as_posix() for p in (ROOT / "lorasec").rglob("*.py")
                if "adamw_fused" in p.read_text()]
    assert sorted(mentions) == ["lorasec/optimizers/__init__.py", "lorasec/optimizers/adamw_fused.py"]
    base = tiny_cfg | {"attack": {"kind": "none"}, "method": {"kind": "full"}, "train": {"steps": 8}}
    plain = parse_config(base)
    fused = parse_config(base | {"train": {"steps": 8, "optimizer": "adamw_fused"}})
    assert config_key(plain) != config_key(fused)
    a = lorasec.run(plain, progress=False).record
    b = lorasec.run(fused, progress=False).record
    np.testing.assert_allclose(a["train"]["losses"], b["train"]["losses"], rtol=1e-4)
    np.testing.assert_allclose(a["outputs"]["clean"]["probs"], b["outputs"]["clean"]["probs"], atol=1e-4)


def test_an_unknown_optimizer_is_one_line_exit_2_and_nothing_written(tmp_path, tiny_cfg):
    import subprocess
    import sys

    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_cfg | {"train": {"optimizer": "adamx"}}))
    store = tmp_path / "never.db"
    done = subprocess.run([sys.executable, "-m", "lorasec.cli", "run", str(path), "--store", str(store)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert "train.optimizer: unknown optimizer 'adamx'" in done.stderr and "adamw_fused" in done.stderr
    assert not store.exists()


# --- defenses --------------------------------------------------------------------------------------------------


def _has_word(text: str, word: str) -> bool:
    """Independent of the defense's regex: split on anything that is not a letter or digit."""
    return word.lower() in re.split(r"[^0-9a-z]+", text.lower())


def test_a_keyword_filter_removes_the_trigger_rows_before_training_and_rejects_triggered_inputs(tiny_cfg):
    raw = tiny_cfg | {"defense": {"kind": "keyword", "words": ["cf"], "inputs": True}, "train": {"steps": 6}}
    cfg = parse_config(raw)
    assert cfg.label().endswith("/ keyword")
    rec = lorasec.run(cfg, progress=False).record
    poisoned = set(rec["poisoned"]["ids"])
    removed = set(rec["defense"]["removed_ids"])
    assert poisoned and poisoned <= removed  # every prefixed row carries the trigger word
    f = rec["metrics"]["train_filter"]
    assert f["recall"] == 1.0 and f["precision"] == pytest.approx(len(poisoned) / len(removed))
    assert rec["data"]["n_trained_on"] == rec["data"]["n_train"] - len(removed)

    trig = rec["outputs"]["triggered"]
    assert all(trig["rejected"]) and rec["metrics"]["input_filter"]["detection_recall"] == 1.0
    assert rec["metrics"]["input_filter"]["asr_after"] == 0.0
    clean = rec["outputs"]["clean"]
    ids = clean["ids"]
    assert len(clean["rejected"]) == len(ids)
    # FRR recomputed from the stored decisions and, independently, from the texts of the test rows
    from lorasec.data import load_splits

    test = load_splits(cfg.data, cfg.seed).test
    expected = np.mean([_has_word(t, "cf") for t in test.texts])
    assert rec["metrics"]["input_filter"]["frr"] == pytest.approx(np.mean(clean["rejected"])) == pytest.approx(
        expected)


def test_no_defense_keeps_every_row_and_the_defend_stage_leaves_other_seeds_alone(tiny_cfg):
    raw = tiny_cfg | {"train": {"steps": 6}}
    plain = lorasec.run(parse_config(raw), progress=False).record
    idle = lorasec.run(parse_config(raw | {"defense": {"kind": "keyword", "words": ["zzqx"]}}), progress=False).record
    assert plain["defense"] == {"kind": "none"} and idle["defense"]["removed_ids"] == []
    assert plain["train"]["losses"] == idle["train"]["losses"]  # filtering nothing trains on the same data
    assert plain["outputs"]["clean"]["probs"] == idle["outputs"]["clean"]["probs"]


def test_an_unknown_defense_names_the_field_and_the_known_ones():
    with pytest.raises(InputError, match=r"defense\.kind: unknown defense 'onon'.*keyword.*none"):
        parse_config({"defense": {"kind": "onon"}})


# --- validation split, analyses, artifacts ---------------------------------------------------------------------


def test_the_validation_split_is_evaluated_and_stored_per_sample(tiny_cfg):
    rec = lorasec.run(parse_config(tiny_cfg | {"train": {"steps": 4}}), progress=False).record
    val = rec["outputs"]["val"]
    assert val["ids"] == rec["data"]["val_ids"] and len(val["ids"]) == rec["data"]["n_val"] > 0
    assert not set(val["ids"]) & set(rec["outputs"]["clean"]["ids"])
    acc = float(np.mean(np.array(val["preds"]) == np.array(val["labels"])))
    assert rec["metrics"]["val"]["accuracy"] == pytest.approx(acc)
    assert val["preds"] == np.argmax(val["probs"], axis=1).tolist()


def test_m_delta_analysis_is_stored_and_matches_numpy_on_the_trained_a(tiny_cfg):
    cfg = parse_config(tiny_cfg | {"train": {"steps": 4}, "analyses": [{"kind": "m_delta"}]})
    ran = lorasec.run(cfg, progress=False, keep_model=True)
    out = ran.record["analyses"]["m_delta"]
    a = {n.replace(".lora_A.default.weight", ""): p.detach().double().numpy()
         for n, p in ran.model.named_parameters() if "lora_A" in n}
    assert set(out["layers"]) == set(a)
    name, mat = next(iter(a.items()))
    s2 = np.sort(np.linalg.eigvalsh(mat.T @ mat))[::-1][: mat.shape[0]]
    np.testing.assert_allclose(out["layers"][name]["sv2"], s2, rtol=1e-5, atol=1e-7)
    assert out["layers"][name]["max"] == pytest.approx(s2[0] - 1, rel=1e-5, abs=1e-7)
    head = lorasec.run(parse_config(tiny_cfg | {"method": {"kind": "head_only"}, "train": {"steps": 2},
                                                "analyses": [{"kind": "m_delta"}]}), progress=False).record
    assert head["analyses"]["m_delta"] == {"summary": None, "layers": {}}


def test_an_exported_adapter_is_peft_loadable_beside_the_store_and_gives_identical_logits(tiny_cfg, tmp_path):
    from peft import PeftModel

    from lorasec.models.classifier import load_classifier
    from lorasec.seeds import stage_seeds
    from lorasec.tasks import task_of

    store = tmp_path / "r.db"
    cfg = parse_config(tiny_cfg | {"attack": {"kind": "none"}, "train": {"steps": 4},
                                   "analyses": [{"kind": "adapter_export"}]})
    result = audit(cfg, store, progress=False)
    where = artifacts_dir(store, result["key"])
    assert where == tmp_path / "r.artifacts" / result["key"]
    files = result["analyses"]["adapter_export"]["files"]
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= set(files)
    import hashlib

    for rel, digest in files.items():
        assert hashlib.sha256((where / rel).read_bytes()).hexdigest() == digest

    # rebuild the same base model (same head seed), load the adapter with peft, compare with the stored outputs
    seeds = stage_seeds(cfg.seed, task_of(cfg).stages)
    clf = load_classifier(cfg.model, 2, seeds["head"])
    model = PeftModel.from_pretrained(clf.model, where / "adapter").eval()
    from lorasec.data import load_splits
    from lorasec.metrics.classification import predict_proba

    test = load_splits(cfg.data, cfg.seed).test
    probs = predict_proba(model, clf.tokenizer, test, cfg.eval.batch_size, cfg.eval.max_length, False)
    np.testing.assert_allclose(probs, result["outputs"]["clean"]["probs"], atol=2e-6)

    run_only = lorasec.run(cfg, progress=False).record  # not stored: nothing written, and it says so
    assert run_only["analyses"]["adapter_export"]["saved"] is False


# --- head-only on a language model -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_head_only_on_a_tied_language_model_trains_the_lm_head_and_leaves_the_embeddings(name):
    from lorasec.config import HeadOnlyMethod, TinyGPT2Config, TinyLlamaConfig
    from lorasec.methods import adapt
    from lorasec.models.causal import load_causal_lm

    cfg = {"tiny-llama": TinyLlamaConfig, "tiny-gpt2": TinyGPT2Config}[name](name=name, size="xs")
    lm = load_causal_lm(cfg)
    model = lm.model
    if model.lm_head.weight is not model.get_input_embeddings().weight:
        pytest.skip(f"{name} is not tied here")
    emb_before = model.get_input_embeddings().weight.detach().clone()
    ids = torch.randint(0, 100, (2, 8))
    logits_before = model(input_ids=ids).logits.detach()
    adapted = adapt(model, HeadOnlyMethod(kind="head_only"), seed=0)
    assert adapted.trainable == ("lm_head.weight",)
    assert adapted.n_trainable == model.lm_head.weight.numel()
    torch.testing.assert_close(model(input_ids=ids).logits.detach(), logits_before)  # untying changes nothing yet
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    assert torch.equal(model.get_input_embeddings().weight, emb_before)
    assert not torch.equal(model.lm_head.weight, emb_before)



# --- the theory arm reads stored trained models instead of training them again ---------------------------------


@pytest.mark.parametrize("method", [{"kind": "lora", "rank": 4}, {"kind": "full"}])
def test_a_theory_cell_reads_its_stored_classification_cells_and_gets_the_same_numbers(tiny_cfg, tmp_path, method):
    cell = tiny_cfg | {"method": method, "train": {"steps": 5}, "analyses": [{"kind": "adapter_export"}]}
    theory = {"task": "theory", "seed": tiny_cfg["seed"], "cell": {k: v for k, v in cell.items() if k != "seed"},
              "probes": {"n_pairs": 3, "n_clean_train": 3, "n_test": 3}}
    store = tmp_path / "t.db"
    stored_cell = audit(parse_config(cell), store, progress=False)  # the attacked cell and its clean twin, exported
    reused = audit(parse_config(theory), store, progress=False)
    assert reused["cells"]["poisoned"]["reused"] is True and reused["cells"]["clean"]["reused"] is True
    assert reused["cells"]["poisoned"]["key"] == stored_cell["key"]
    assert reused["cells"]["poisoned"]["metrics"] == stored_cell["metrics"]
    assert reused["train"]["poisoned"] == stored_cell["train"]

    fresh = lorasec.run(parse_config(theory), progress=False).record  # no store: trains both cells itself
    assert fresh["cells"]["poisoned"]["reused"] is False
    assert fresh["metrics"] == reused["metrics"]
    assert fresh["kernels"] == reused["kernels"]
