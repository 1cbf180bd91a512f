"""Extraction metrics against rapidfuzz, rouge-score, nltk's BLEU and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.translate.bleu_score import SmoothingFunction
from nltk.translate.bleu_score import sentence_bleu as nltk_sentence_bleu
from rapidfuzz.distance import Levenshtein
from rouge_score import rouge_scorer

from lorasec.metrics.extraction import (
    DEFAULT_THRESHOLDS,
    Embedder,
    ExtractionScores,
    aggregate_extraction,
    classify_memorization,
    common_prefix_length,
    edit_similarity,
    embedding_cosine,
    exact_match,
    relaxed_memorization_rate,
    rouge_l,
    score_record,
    score_records,
    sentence_bleu,
    token_edit_similarity,
)

TRUE = "The patient reported chest pain after climbing stairs and was given aspirin."
NEAR = "The patient reported chest pain after climbing the stairs and was given aspirin."
REWORD = "After walking up stairs the patient had pain in the chest, so aspirin was prescribed."
OTHER = "Stock markets closed higher on Friday as technology shares rallied."


def levenshtein_brute(a: list, b: list) -> int:
    """Textbook dynamic programme, one row at a time."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def test_exact_match_and_prefix() -> None:
    assert exact_match([5, 6, 7], np.array([5, 6, 7]))
    assert not exact_match([5, 6], [5, 6, 7])  # stopped early: not exact
    assert common_prefix_length([5, 6, 9, 7], [5, 6, 7, 7]) == 2
    assert common_prefix_length([5, 6], [5, 6, 7]) == 2
    assert common_prefix_length([], [1]) == 0


def test_edit_similarity_against_rapidfuzz_and_a_dp() -> None:
    assert edit_similarity(NEAR, TRUE) == Levenshtein.normalized_similarity(NEAR, TRUE)
    dist = levenshtein_brute(list(NEAR), list(TRUE))
    assert dist == 4  # "the " inserted
    assert edit_similarity(NEAR, TRUE) == pytest.approx(1 - dist / max(len(NEAR), len(TRUE)))
    assert edit_similarity("", "") == 1.0 and edit_similarity("abc", "") == 0.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 6), max_size=12), st.lists(st.integers(0, 6), max_size=12))
def test_token_edit_similarity_matches_dp(a: list[int], b: list[int]) -> None:
    expected = 1.0 if not (a or b) else 1 - levenshtein_brute(a, b) / max(len(a), len(b))
    assert token_edit_similarity(a, b) == pytest.approx(expected)


def test_rouge_l_matches_rouge_score() -> None:
    ref = rouge_scorer.RougeScorer(["rougeL"]).score(TRUE, REWORD)["rougeL"].fmeasure
    assert rouge_l(REWORD, TRUE) == ref
    # By hand: LCS of "a b c d e" and "a x c d y e" is "a c d e" (4): P = 4/6, R = 4/5, F = 2PR/(P+R).
    p, r = 4 / 6, 4 / 5
    assert rouge_l("a x c d y e", "a b c d e") == pytest.approx(2 * p * r / (p + r))


def test_bleu_by_hand() -> None:
    # generated 1 2 3 4 5 6 vs truth 1 2 3 4 7 6 8: matches 1-gram 5/6, 2-gram 3/5, 3-gram 2/4, 4-gram 1/3.
    hyp, ref = [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 7, 6, 8]
    p = [5 / 6, (3 + 1) / (5 + 1), (2 + 1) / (4 + 1), (1 + 1) / (3 + 1)]  # add-one for n >= 2
    bp = math.exp(1 - 7 / 6)
    assert sentence_bleu(hyp, ref) == pytest.approx(bp * math.exp(sum(map(math.log, p)) / 4))
    assert sentence_bleu(ref, ref) == pytest.approx(1.0)
    assert sentence_bleu([], ref) == 0.0 and sentence_bleu([9, 9], ref) == 0.0
    # Clipping: "1 1 1 1" against "1 2" has one unigram match, not four: p = 1/4, 1/4, 1/3, 1/2 (n-grams
    # longer than the truth match nothing but still get add-one), no brevity penalty since 4 > 2.
    assert sentence_bleu([1, 1, 1, 1], [1, 2]) == pytest.approx((1 / 4 * 1 / 4 * 1 / 3 * 1 / 2) ** (1 / 4))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=15), st.lists(st.integers(0, 5), min_size=1, max_size=15))
def test_bleu_matches_nltk_method2(hyp: list[int], ref: list[int]) -> None:
    expected = nltk_sentence_bleu([ref], hyp, smoothing_function=SmoothingFunction().method2) if hyp else 0.0
    assert sentence_bleu(hyp, ref) == pytest.approx(float(expected), abs=1e-12)


def test_embedding_cosine_rowwise() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0], [4.0, 3.0]])
    np.testing.assert_allclose(embedding_cosine(a, b), [1.0, -1.0, 24 / 25])
    with pytest.raises(ValueError, match="zeros"):
        embedding_cosine(np.zeros((1, 2)), np.ones((1, 2)))


@pytest.mark.parametrize(
    ("exact", "edit", "rl", "cos", "label"),
    [
        (True, 0.1, 0.0, 0.0, "verbatim"),
        (False, 0.95, 0.0, None, "verbatim"),
        (False, 0.9, 0.5, 0.1, "paraphrase"),
        (False, 0.3, 0.2, 0.8, "paraphrase"),
        (False, 0.3, 0.2, 0.6, "idea"),
        (False, 0.3, 0.2, 0.59, "none"),
        (False, 0.3, 0.2, None, "none"),
    ],
)
def test_classify_thresholds(exact: bool, edit: float, rl: float, cos: float | None, label: str) -> None:
    assert classify_memorization(exact, edit, rl, cos) == label


def test_classify_refuses_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        classify_memorization(False, 0.5, float("nan"))


def test_relaxed_rate() -> None:
    assert relaxed_memorization_rate([0.9, 0.8, 0.79, 0.1], 0.8) == 0.5
    with pytest.raises(ValueError, match="NaN"):
        relaxed_memorization_rate([0.9, float("nan")], 0.8)


def fake_embed(texts: list[str]) -> np.ndarray:
    """Deterministic stand-in for the MiniLM embedder: a bag of letters."""
    out = np.zeros((len(texts), 26))
    for i, t in enumerate(texts):
        for ch in t.lower():
            if ch.isalpha():
                out[i, ord(ch) - 97] += 1
    return out + 1e-3


def test_aggregate_is_the_mean_of_the_records() -> None:
    gen_ids = [[1, 2, 3, 4], [1, 2, 9, 4], [7, 7, 7, 7]]
    true_ids = [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]
    gen_txt, true_txt = [TRUE, REWORD, OTHER], [TRUE, TRUE, TRUE]
    recs = score_records(gen_ids, true_ids, gen_txt, true_txt, embedder=fake_embed)
    emb = fake_embed(gen_txt + true_txt)
    for r, g, t, gt, tt, c in zip(
        recs, gen_ids, true_ids, gen_txt, true_txt, embedding_cosine(emb[:3], emb[3:]), strict=True
    ):
        assert r == score_record(g, t, gt, tt, float(c))
        assert r.label == classify_memorization(r.exact, r.edit_similarity, r.rouge_l, r.cosine, DEFAULT_THRESHOLDS)
    assert [r.prefix_match for r in recs] == [4, 2, 0]
    summary = aggregate_extraction(recs, relaxed_threshold=0.9)
    assert summary.n == 3
    assert summary.exact_rate == pytest.approx(1 / 3)
    assert summary.mean_prefix_match == pytest.approx(2.0)
    for name in ("edit_similarity", "token_edit_similarity", "rouge_l", "bleu", "cosine"):
        assert getattr(summary, f"mean_{name}") == pytest.approx(np.mean([getattr(r, name) for r in recs]))
    assert summary.relaxed_rate == pytest.approx(np.mean([r.cosine >= 0.9 for r in recs]))
    assert sum(summary.label_rates.values()) == pytest.approx(1.0)
    assert summary.label_rates["verbatim"] == pytest.approx(1 / 3)


def test_aggregate_refuses_mixed_cosines() -> None:
    a = score_record([1], [1], "a", "a", 0.9)
    b = score_record([1], [1], "a", "a", None)
    with pytest.raises(ValueError, match="all or none"):
        aggregate_extraction([a, b])
    assert aggregate_extraction([b]).relaxed_rate is None
    assert isinstance(a, ExtractionScores)


def test_record_counts_must_agree() -> None:
    with pytest.raises(ValueError, match="one entry per record"):
        score_records([[1]], [[1], [2]], ["a"], ["a"])


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(batch_size=4)


def test_minilm_embeddings(embedder: Embedder) -> None:
    texts = [TRUE, TRUE, REWORD, OTHER, "short", NEAR]
    emb = embedder(texts)
    assert emb.shape == (6, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    cos = emb @ emb.T
    assert cos[0, 1] == pytest.approx(1.0, abs=1e-5)
    assert cos[0, 5] > 0.95  # one inserted word
    assert cos[0, 2] > 0.6 > cos[0, 3]  # a paraphrase beats an unrelated sentence by a margin
    # Padding must not leak into the mean: embedding alone equals embedding in a mixed-length batch.
    np.testing.assert_allclose(embedder(["short"])[0], emb[4], atol=1e-5)
    assert embedder.count_truncated(texts) == 0 and embedder.count_truncated(["word " * 300]) == 1
    assert embedder([]).shape == (0, 384)


def test_real_embeddings_drive_the_labels(embedder: Embedder) -> None:
    """With MiniLM cosines: the reworded suffix is a paraphrase (cosine ~0.89), the unrelated one is not."""
    recs = score_records([[1], [2], [3]], [[1], [1], [1]], [NEAR, REWORD, OTHER], [TRUE] * 3, embedder=embedder)
    assert [r.label for r in recs] == ["verbatim", "paraphrase", "none"]
    assert recs[1].rouge_l < DEFAULT_THRESHOLDS.paraphrase_rouge_l  # it is the embedding that catches it
