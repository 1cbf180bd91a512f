"""Extraction metrics against hand-written DPs (Levenshtein, LCS), nltk's BLEU and hand-computed values."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.translate.bleu_score import SmoothingFunction
from nltk.translate.bleu_score import sentence_bleu as nltk_sentence_bleu

from lorasec.errors import InputError
from lorasec.metrics.extraction import (
    DEFAULT_THRESHOLDS,
    Embedder,
    ExtractionScores,
    MemorizationThresholds,
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


def test_edit_similarity_against_a_dp() -> None:
    dist = levenshtein_brute(list(NEAR), list(TRUE))
    assert dist == 4  # "the " inserted
    assert edit_similarity(NEAR, TRUE) == pytest.approx(1 - 4 / len(NEAR))
    # kitten -> sitting: 3 edits over max(6, 7) characters.
    assert edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert edit_similarity("sitting", "kitten") == pytest.approx(1 - 3 / 7)
    assert edit_similarity("", "") == 1.0 and edit_similarity("abc", "") == 0.0
    assert edit_similarity("Abc", "abc") == pytest.approx(2 / 3)  # case-sensitive
    assert type(edit_similarity("a", "b")) is float


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="abcAB é", max_size=12), st.text(alphabet="abcAB é", max_size=12))
def test_edit_similarity_matches_dp(a: str, b: str) -> None:
    expected = 1.0 if not (a or b) else 1 - levenshtein_brute(list(a), list(b)) / max(len(a), len(b))
    assert edit_similarity(a, b) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 6), max_size=12), st.lists(st.integers(0, 6), max_size=12))
def test_token_edit_similarity_matches_dp(a: list[int], b: list[int]) -> None:
    expected = 1.0 if not (a or b) else 1 - levenshtein_brute(a, b) / max(len(a), len(b))
    assert token_edit_similarity(a, b) == pytest.approx(expected)


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's tokenizer without stemming: lowercase, runs of [a-z0-9] are the tokens."""
    return re.findall(r"[a-z0-9]+", text.lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence, the textbook dynamic programme."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def rouge_l_by_hand(generated: str, target: str) -> float:
    gen, ref = rouge_tokens(generated), rouge_tokens(target)
    lcs = lcs_length(gen, ref)
    if not lcs:
        return 0.0
    p, r = lcs / len(gen), lcs / len(ref)
    return 2 * p * r / (p + r)


def test_rouge_l_by_hand() -> None:
    # LCS of "a b c d e" and "a x c d y e" is "a c d e" (4): P = 4/6, R = 4/5, F = 2PR/(P+R).
    p, r = 4 / 6, 4 / 5
    assert rouge_l("a x c d y e", "a b c d e") == pytest.approx(2 * p * r / (p + r))
    # Case and punctuation are dropped: "The cat, sat!" is the tokens the cat sat.
    assert rouge_l("The cat, sat!", "the cat sat") == pytest.approx(1.0)
    # No stemming: "cats running" shares no token with "cat run".
    assert rouge_l("cats running", "cat run") == 0.0
    # Order matters (a subsequence, not a bag): LCS of "c b a" and "a b c" is 1 -> P = R = F = 1/3.
    assert rouge_l("c b a", "a b c") == pytest.approx(1 / 3)
    assert rouge_l("", "a b") == 0.0 and rouge_l("", "") == 0.0
    assert rouge_l(REWORD, TRUE) == pytest.approx(rouge_l_by_hand(REWORD, TRUE))
    assert type(rouge_l("a", "a")) is float


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["a", "B", "c", "d4", "e,", "f.", "-", "é"]), max_size=10).map(" ".join),
       st.lists(st.sampled_from(["a", "b", "C", "d4", "e", "f"]), max_size=10).map(" ".join))
def test_rouge_l_matches_lcs_dp(generated: str, target: str) -> None:
    assert rouge_l(generated, target) == pytest.approx(rouge_l_by_hand(generated, target), abs=1e-12)


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
    return Embedder()


def test_minilm_embeddings(embedder: Embedder) -> None:
    texts = [TRUE, TRUE, REWORD, OTHER, "short", NEAR]
    emb = embedder(texts)
    assert (embedder.batch_size, embedder.max_length) == (64, 256)  # documented defaults
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


def test_bleu_orders_and_checks() -> None:
    # max_n = 1: unigram precision 1/2 times BP (c = r = 2 -> exp(0) = 1).
    assert sentence_bleu([1, 2], [1, 3], max_n=1) == pytest.approx(0.5)
    # max_n = 2: p1 = 2/3, p2 = (1 + 1) / (2 + 1) -> sqrt(p1 * p2); c = 3 > r = 2, no brevity penalty.
    assert sentence_bleu([1, 2, 4], [1, 2], max_n=2) == pytest.approx(math.sqrt(2 / 3 * 2 / 3))
    # Hypothesis shorter than n: n-gram totals floor at 1 -> p3 = p4 = (0 + 1) / (1 + 1); BP = exp(1 - 3/2).
    assert sentence_bleu([1, 2], [1, 2, 3]) == pytest.approx(math.exp(-0.5) * (1 * 1 * 0.5 * 0.5) ** 0.25)
    # An exact copy shorter than 4 tokens is not 1: p4 = (0 + 1) / (1 + 1) (as nltk's method2).
    assert sentence_bleu(np.array([1, 2, 3]), (1, 2, 3)) == pytest.approx(0.5**0.25)
    with pytest.raises(ValueError, match=r"max_n must be >= 1 \(got 0\)"):
        sentence_bleu([1], [1], max_n=0)


def test_token_level_helpers_on_numpy_ids() -> None:
    assert exact_match(np.array([5, 6], dtype=np.int64), [5, 6])
    assert not exact_match([5, 6, 7], [5, 6])
    assert not exact_match([5, 7], [5, 6])
    assert common_prefix_length(np.array([1, 2, 3]), [1, 2, 4]) == 2
    assert common_prefix_length([9, 2], [1, 2]) == 0
    assert common_prefix_length([1, 2, 3], [1, 2, 3]) == 3
    assert token_edit_similarity(np.array([1, 2, 3]), [1, 3]) == pytest.approx(2 / 3)
    assert token_edit_similarity([], []) == 1.0


def test_embedding_cosine_checks() -> None:
    with pytest.raises(ValueError, match=r"need two \(n, d\) matrices of one shape"):
        embedding_cosine(np.ones((2, 3)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="one shape"):
        embedding_cosine(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="NaN/inf"):
        embedding_cosine(np.ones((1, 2)), np.array([[1.0, np.inf]]))
    with pytest.raises(ValueError, match="NaN/inf"):
        embedding_cosine(np.array([[np.nan, 1.0]]), np.ones((1, 2)))
    with pytest.raises(ValueError, match="all zeros"):
        embedding_cosine(np.ones((1, 2)), np.zeros((1, 2)))


def test_relaxed_rate_checks() -> None:
    assert relaxed_memorization_rate([0.8], 0.8) == 1.0  # ">=": at the threshold counts
    with pytest.raises(ValueError, match=r"non-empty 1-D array \(got shape \(0,\)\)"):
        relaxed_memorization_rate([], 0.8)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        relaxed_memorization_rate([[0.9]], 0.8)
    with pytest.raises(ValueError, match=r"contain 2 NaN value\(s\)"):
        relaxed_memorization_rate([float("nan"), 0.1, float("nan")], 0.8)


def test_classify_with_custom_thresholds_and_nan_cosine() -> None:
    strict = MemorizationThresholds(verbatim_edit=0.99, paraphrase_rouge_l=0.9, paraphrase_cosine=0.95,
                                    idea_cosine=0.9)
    assert classify_memorization(False, 0.97, 0.0, 0.0, strict) == "none"
    assert classify_memorization(False, 0.99, 0.0, 0.0, strict) == "verbatim"
    assert classify_memorization(False, 0.1, 0.9, None, strict) == "paraphrase"
    assert classify_memorization(False, 0.1, 0.89, 0.95, strict) == "paraphrase"
    assert classify_memorization(False, 0.1, 0.89, 0.9, strict) == "idea"
    assert classify_memorization(False, 0.1, 0.89, 0.89, strict) == "none"
    with pytest.raises(ValueError, match="NaN"):
        classify_memorization(False, 0.5, 0.1, float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        classify_memorization(True, float("nan"), 0.1)


def test_score_record_fields_by_hand() -> None:
    strict = MemorizationThresholds(verbatim_edit=1.0)
    r = score_record([1, 2, 3, 4], [1, 2, 4], "a b c", "a b d", thresholds=strict)
    assert (r.exact, r.prefix_match, r.target_len, r.cosine) == (False, 2, 3, None)
    assert r.edit_similarity == pytest.approx(1 - 1 / 5)
    assert r.token_edit_similarity == pytest.approx(1 - 1 / 4)
    assert r.rouge_l == pytest.approx(2 / 3)
    assert r.bleu == pytest.approx(sentence_bleu([1, 2, 3, 4], [1, 2, 4]))
    assert r.label == "paraphrase"  # edit 0.8 < 1.0; ROUGE-L 2/3 >= 0.5
    assert score_record([1], [1], "x", "x").label == "verbatim"
    assert score_record([1], [2], "abcde", "abcdf").label == "none"  # 0.8 edit, ROUGE-L 0


def test_score_records_embeds_once_and_not_at_all_when_empty() -> None:
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return fake_embed(texts)

    assert score_records([], [], [], [], embedder=embed) == []
    assert calls == []
    recs = score_records([[1], [2]], [[1], [1]], ["ab", "cd"], ["ab", "ab"], embedder=embed)
    assert calls == [["ab", "cd", "ab", "ab"]]  # generated first, then targets, one call
    assert recs[0].cosine == pytest.approx(1.0) and recs[1].cosine < 0.5
    assert [r.cosine for r in score_records([[1]], [[1]], ["ab"], ["ab"])] == [None]
    with pytest.raises(ValueError, match="1 generated_ids, 1 target_ids, 2 generated_texts, 1 target_texts"):
        score_records([[1]], [[1]], ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="one entry per record"):
        score_records([[1]], [[1]], ["a"], ["a", "b"])


def test_aggregate_without_embeddings_and_empty() -> None:
    recs = [score_record([1, 2], [1, 2], "a b", "a b"), score_record([3], [1, 2], "x", "a b")]
    s = aggregate_extraction(recs)
    assert s.n == 2 and s.exact_rate == 0.5 and s.mean_prefix_match == 1.0
    assert s.mean_cosine is None and s.relaxed_rate is None and s.relaxed_threshold == 0.8
    assert s.label_rates == {"verbatim": 0.5, "paraphrase": 0.0, "idea": 0.0, "none": 0.5}
    # BLEU of [1, 2] against itself: p3 = p4 = 1/2 -> sqrt(1/2); the second record has no unigram match.
    assert s.mean_bleu == pytest.approx(math.sqrt(0.5) / 2) and s.mean_rouge_l == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no extraction scores"):
        aggregate_extraction([])
    with pytest.raises(ValueError, match="1 of 2 records have an embedding cosine"):
        aggregate_extraction([score_record([1], [1], "a", "a", 0.5), recs[0]])
    cos = aggregate_extraction([score_record([1], [1], "a", "a", 0.5), score_record([1], [1], "a", "a", 0.9)])
    assert cos.mean_cosine == pytest.approx(0.7) and cos.relaxed_rate == 0.5


def test_embedder_refuses_bad_batch_size() -> None:
    with pytest.raises(ValueError, match=r"batch_size must be >= 1 \(got 0\)"):
        Embedder(batch_size=0)


def test_minilm_one_text_per_batch_equals_one_mixed_batch(embedder: Embedder) -> None:
    """batch_size=1 is allowed; texts come back in input order whatever the length-sorted batching did."""
    texts = ["short", TRUE, OTHER, "a b", REWORD]
    one_at_a_time = Embedder(batch_size=1)
    np.testing.assert_allclose(one_at_a_time(texts), embedder(texts), atol=1e-5)


def test_minilm_truncates_at_max_length(embedder: Embedder) -> None:
    head = "word " * 254  # [CLS] + 254 + [SEP] = 256 word pieces: exactly max_length, not truncated
    assert embedder.count_truncated([head, head + "word"]) == 1
    # Past 256 word pieces the rest is dropped: the tail changes nothing (and [SEP] stays last).
    long_text = head + "zebra " * 50
    emb = embedder([long_text, head])
    np.testing.assert_allclose(emb[0], emb[1], atol=1e-5)


def test_embedder_checks_its_model_dir(tmp_path) -> None:
    with pytest.raises(InputError, match=r"^embedder\.model_dir: .* has no config\.json"):
        Embedder(model_dir=tmp_path)


def test_float32_embeddings_are_compared_in_float64() -> None:
    # Nearly parallel float32 rows: cos = (1 - d^2) / (1 + d^2) with d = float32(1e-4), about 1 - 2e-8. In float32
    # the norms round to 1 and the difference from 1 is lost or wrong.
    d = float(np.float32(1e-4))
    a = np.array([[1.0, 1e-4]], dtype=np.float32)
    b = np.array([[1.0, -1e-4]], dtype=np.float32)
    expected = (1 - d * d) / (1 + d * d)
    assert embedding_cosine(a, b)[0] == pytest.approx(expected, abs=1e-15)
    assert embedding_cosine(b, a)[0] == pytest.approx(expected, abs=1e-15)
    assert embedding_cosine(a, b).dtype == np.float64


def test_error_messages_are_exact() -> None:
    with pytest.raises(ValueError, match=r"^embeddings contain NaN/inf$"):
        embedding_cosine(np.ones((1, 2)), np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match=r"^an embedding row is all zeros; its cosine is undefined$"):
        embedding_cosine(np.zeros((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"^no extraction scores to aggregate$"):
        aggregate_extraction([])
    # Two of three records carry a cosine (the count is of those WITH one).
    recs = [score_record([1], [1], "a", "a", c) for c in (0.5, 0.6, None)]
    with pytest.raises(ValueError, match=r"^2 of 3 records have an embedding cosine; need all or none$"):
        aggregate_extraction(recs)


def test_labels_use_exact_ids_and_the_given_thresholds() -> None:
    # Token-for-token equal, but the decoded texts differ entirely: still verbatim (exactness is on ids).
    assert score_record([1, 2], [1, 2], "abc", "xyz").label == "verbatim"
    # ROUGE-L 2/3 is a paraphrase by default (>= 0.5) but not with a 0.9 bar.
    high_bar = MemorizationThresholds(paraphrase_rouge_l=0.9)
    assert score_record([1], [2], "a b c", "a b d").label == "paraphrase"
    assert score_record([1], [2], "a b c", "a b d", thresholds=high_bar).label == "none"
    recs = score_records([[1], [1]], [[2], [1]], ["a b c", "q"], ["a b d", "q"], thresholds=high_bar)
    assert [r.label for r in recs] == ["none", "verbatim"]
