"""Batched scoring equals scoring one row at a time, and an independent unpadded reference, on mixed lengths.

Tiny random models (BERT classifier, `xs` Llama) keep each test to seconds on two CPU cores.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import toy_dataset

import lorasec.metrics.sequences as sequences_mod
from lorasec.config import TinyBert, TinyLlamaConfig
from lorasec.data.batching import rows_per_batch
from lorasec.metrics.classification import predict_proba
from lorasec.metrics.exposure import exact_rank, rank_by_enumeration
from lorasec.metrics.sequences import sequence_stats, total_nll, vocab_size
from lorasec.models.causal import load_causal_lm
from lorasec.models.classifier import load_classifier

TOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread while this module runs: on two shared cores, two threads spin against each other
    and a 17-token forward pass of the xs Llama takes 40x longer. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def clf():
    """Tiny random BERT with its weight matrices redrawn at sd 0.3: at the default init (sd 0.02) every row's
    probabilities agree to ~2e-5, too close for a 1e-5 comparison to notice rows swapped between texts."""
    clf = load_classifier(TinyBert(name="tiny-bert"), num_labels=2, seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in clf.model.named_parameters():
            if p.ndim == 2 and "embeddings" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return clf


@pytest.fixture(scope="module")
def lm():
    return load_causal_lm(TinyLlamaConfig(name="tiny-llama", size="xs", seed=3))


class ForwardSpy:
    """Records the (rows, width) of every forward pass of a module."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.shapes: list[tuple[int, int]] = []
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        self.shapes.append(tuple(ids.shape))

    def __enter__(self) -> ForwardSpy:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


# --- classifier -------------------------------------------------------------------------------


def test_predict_proba_batched_equals_row_by_row(clf, capsys) -> None:
    ds = toy_dataset(13)
    max_length = 9  # some rows are cut (11 words + [CLS] [SEP] > 9), most are padded
    clf.model.train()  # dropout on: predict_proba must switch it off itself
    with ForwardSpy(clf.model) as spy:
        batched = predict_proba(clf.model, clf.tokenizer, ds, batch_size=5, max_length=max_length)
    assert [rows for rows, _ in spy.shapes] == [5, 5, 3]
    assert not clf.model.training
    widths = [w for _, w in spy.shapes]
    assert widths == sorted(widths) and widths[-1] == max_length and widths[0] < max_length  # length-sorted
    single = predict_proba(clf.model, clf.tokenizer, ds, batch_size=1, max_length=max_length)
    assert batched.shape == (13, 2) and batched.dtype == np.float64
    np.testing.assert_allclose(batched, single, atol=TOL, rtol=0)
    # Independent reference, in the original row order: each text alone, tokenizer truncation, no padding.
    ref = []
    with torch.no_grad():
        for text in ds.texts:
            enc = clf.tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            logits = clf.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            ref.append(torch.softmax(logits[0].double(), -1).numpy())
    np.testing.assert_allclose(batched, np.array(ref), atol=TOL, rtol=0)
    np.testing.assert_allclose(batched.sum(1), 1.0, atol=1e-12)
    assert np.ptp(batched[:, 1]) > 0.05  # rows differ, so a row-order mix-up would show
    assert capsys.readouterr().err == ""  # no progress bar unless asked


def test_predict_proba_row_order_survives_a_large_batch(clf) -> None:
    ds = toy_dataset(13, seed=1)
    everything = predict_proba(clf.model, clf.tokenizer, ds, batch_size=64, max_length=32)
    pieces = np.vstack([predict_proba(clf.model, clf.tokenizer, ds.subset(np.array([i])), 1, 32) for i in range(13)])
    np.testing.assert_allclose(everything, pieces, atol=TOL, rtol=0)


# --- causal LM sequence statistics ------------------------------------------------------------


def mixed_sequences(vocab: int, pad_id: int) -> list[list[int]]:
    rng = np.random.default_rng(4)
    lengths = [2, 9, 5, 17, 3, 12, 7]
    seqs = [rng.integers(3, vocab, size=n).tolist() for n in lengths]
    seqs[3][6] = pad_id  # the pad id inside a real sequence must be scored as a token, not masked
    return seqs


def reference_stats(model, seq: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One unpadded sequence straight through the model: log p(x_t | x_<t), mean and sd of log p over V."""
    ids = torch.tensor([seq])
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].double()  # (T-1, V)
    logp = torch.log_softmax(logits, dim=-1)
    lp = logp[torch.arange(len(seq) - 1), ids[0, 1:]]
    p = logp.exp()
    mu = (p * logp).sum(-1)
    sigma = (p * (logp - mu[:, None]) ** 2).sum(-1).sqrt()
    return lp.numpy(), mu.numpy(), sigma.numpy()


def assert_stats_close(got, want) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.logprobs, w[0], atol=TOL, rtol=0)
        np.testing.assert_allclose(g.mu, w[1], atol=TOL, rtol=0)
        np.testing.assert_allclose(g.sigma, w[2], atol=TOL, rtol=0)


def test_sequence_stats_batched_equals_single_and_reference(lm, capsys) -> None:
    pad = lm.tokenizer.pad_token_id
    seqs = mixed_sequences(vocab_size(lm.model), pad)
    with ForwardSpy(lm.model) as spy:
        batched = sequence_stats(lm.model, seqs, pad, batch_size=3)
    # Three rows per pass, in input order, right-padded to the longest row of each pass.
    assert spy.shapes == [(3, 9), (3, 17), (1, 7)]
    single = sequence_stats(lm.model, seqs, pad, batch_size=1)
    ref = [reference_stats(lm.model, s) for s in seqs]
    assert_stats_close(batched, ref)
    assert_stats_close(single, ref)
    for b, s in zip(batched, seqs, strict=True):
        assert b.logprobs.shape == b.mu.shape == b.sigma.shape == (len(s) - 1,)
        assert b.logprobs.dtype == np.float64
    assert capsys.readouterr().err == ""  # no progress bar unless asked


def test_sequence_stats_without_vocab_stats(lm) -> None:
    pad = lm.tokenizer.pad_token_id
    seqs = mixed_sequences(vocab_size(lm.model), pad)
    got = sequence_stats(lm.model, seqs, pad, batch_size=4, with_vocab_stats=False)
    for g, s in zip(got, seqs, strict=True):
        assert g.mu is None and g.sigma is None
        np.testing.assert_allclose(g.logprobs, reference_stats(lm.model, s)[0], atol=TOL, rtol=0)
        assert g.logprobs.dtype == np.float64 and g.logprobs.shape == (len(s) - 1,)


def test_sequence_stats_default_batch_size_and_empty_input(lm) -> None:
    pad = lm.tokenizer.pad_token_id
    seqs = [[5, 6, 7]] * 17
    with ForwardSpy(lm.model) as spy:
        sequence_stats(lm.model, seqs, pad)
    assert [rows for rows, _ in spy.shapes] == [16, 1]
    assert sequence_stats(lm.model, [], pad) == []
    assert total_nll(lm.model, [], pad).shape == (0,)


def test_total_nll_batched_equals_single_and_reference(lm) -> None:
    pad = lm.tokenizer.pad_token_id
    seqs = mixed_sequences(vocab_size(lm.model), pad)
    batched = total_nll(lm.model, seqs, pad, batch_size=4)
    single = np.array([total_nll(lm.model, [s], pad, batch_size=1)[0] for s in seqs])
    ref = np.array([-reference_stats(lm.model, s)[0].sum() for s in seqs])
    assert batched.shape == (len(seqs),)
    np.testing.assert_allclose(batched, single, atol=TOL, rtol=0)
    np.testing.assert_allclose(batched, ref, atol=TOL, rtol=0)
    assert (batched > 0).all()  # an NLL of a random model's tokens: positive


def test_total_nll_default_batch_size(lm) -> None:
    pad = lm.tokenizer.pad_token_id
    with ForwardSpy(lm.model) as spy:
        total_nll(lm.model, [[5, 6]] * 257, pad)
    assert [rows for rows, _ in spy.shapes] == [256, 1]


def test_vocab_size_is_the_logit_width(lm) -> None:
    assert vocab_size(lm.model) == 49152
    with torch.no_grad():
        assert lm.model(torch.tensor([[5, 6]])).logits.shape[-1] == vocab_size(lm.model)


# --- memory budget ------------------------------------------------------------------------------


def test_rows_per_batch_caps_batches() -> None:
    per_row = 10 * 100 * 4  # float32 (seq_len, width) logits of one row
    assert rows_per_batch(10, 100, 64, budget_bytes=5 * per_row) == 5
    assert rows_per_batch(10, 100, 64, budget_bytes=5 * per_row - 1) == 4
    assert rows_per_batch(10, 100, 3, budget_bytes=5 * per_row) == 3  # the cap wins
    assert rows_per_batch(10, 100, 64, budget_bytes=1) == 1  # never below one row
    assert rows_per_batch(1000, 49152, 256) == (512 << 20) // (1000 * 49152 * 4) == 2  # default budget: 512 MiB
    assert rows_per_batch(0, 0, 7, budget_bytes=0) == 1


def test_budget_shrinks_batches_and_keeps_the_stats(lm, monkeypatch) -> None:
    pad = lm.tokenizer.pad_token_id
    seqs = mixed_sequences(vocab_size(lm.model), pad)
    calls: list[tuple[int, int, int]] = []

    def tiny_budget(seq_len: int, width: int, cap: int) -> int:
        calls.append((seq_len, width, cap))
        return rows_per_batch(seq_len, width, cap, budget_bytes=seq_len * width * 4 - 1)  # under one row

    monkeypatch.setattr(sequences_mod, "rows_per_batch", tiny_budget)
    with ForwardSpy(lm.model) as spy:
        forced = sequence_stats(lm.model, seqs, pad, batch_size=8)
    assert calls == [(17, 49152, 8)]  # the longest sequence, the vocabulary, the requested cap
    assert [rows for rows, _ in spy.shapes] == [1] * len(seqs)
    assert_stats_close(forced, [reference_stats(lm.model, s) for s in seqs])
    monkeypatch.undo()
    batched = sequence_stats(lm.model, seqs, pad, batch_size=8)
    for f, b in zip(forced, batched, strict=True):
        np.testing.assert_allclose(f.logprobs, b.logprobs, atol=TOL, rtol=0)
        np.testing.assert_allclose(f.mu, b.mu, atol=TOL, rtol=0)
        np.testing.assert_allclose(f.sigma, b.sigma, atol=TOL, rtol=0)


# --- canary scoring ---------------------------------------------------------------------------


def test_canary_candidates_scored_in_one_batch_equal_scored_alone(lm) -> None:
    pad = lm.tokenizer.pad_token_id
    secrets = [7, 42, 123, 9999, 5, 31337, 808, 1, 65536, 250]  # different digit counts: mixed lengths
    cands = [lm.tokenizer(f"my pin is {s}", add_special_tokens=False)["input_ids"] for s in secrets]
    assert len({len(c) for c in cands}) > 1
    together = total_nll(lm.model, cands, pad)  # one batch of all candidates
    alone = np.array([total_nll(lm.model, [c], pad)[0] for c in cands])
    np.testing.assert_allclose(together, alone, atol=TOL, rtol=0)
    # The exposure machinery on batched scores ranks the canary as the one-at-a-time scores do.
    gaps = np.diff(np.sort(alone))
    assert gaps.min() > 10 * TOL  # no near-ties, so the ranks are well defined
    for canary in (0, 3, 7):
        res = rank_by_enumeration(lambda idx: total_nll(lm.model, [cands[i] for i in idx], pad), len(cands), canary, 4)
        assert res.canary_score == pytest.approx(alone[canary], abs=TOL)
        assert res.rank == exact_rank(alone[canary], alone)
