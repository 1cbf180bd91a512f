"""Classification metrics equal scikit-learn's; ASR and triggered accuracy agree with brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from lorasec.metrics.classification import backdoor_metrics, classification_metrics

labels_and_preds = st.integers(2, 5).flatmap(
    lambda k: st.tuples(st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1,
                                              max_size=80))
)


@settings(deadline=None, max_examples=60)
@given(labels_and_preds)
def test_classification_metrics_equal_sklearn(kp):
    k, pairs = kp
    y, p = np.array(pairs).T
    m = classification_metrics(y, p, k)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
    ks = list(range(k))
    assert m["f1_macro"] == pytest.approx(f1_score(y, p, average="macro", labels=ks, zero_division=0))
    assert m["precision_macro"] == pytest.approx(precision_score(y, p, average="macro", labels=ks, zero_division=0))
    assert m["recall_macro"] == pytest.approx(recall_score(y, p, average="macro", labels=ks, zero_division=0))
    if k == 2:
        tp = np.sum((p == 1) & (y == 1))
        fp = np.sum((p == 1) & (y == 0))
        fn = np.sum((p == 0) & (y == 1))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        assert m["precision"] == pytest.approx(prec)
        assert m["recall"] == pytest.approx(rec)
        assert m["f1"] == pytest.approx(2 * prec * rec / (prec + rec) if prec + rec else 0.0)


@settings(deadline=None, max_examples=60)
@given(st.integers(2, 4), st.lists(st.integers(0, 3), min_size=1, max_size=60), st.data())
def test_asr_and_triggered_accuracy_brute_force(k, raw, data):
    target = data.draw(st.integers(0, k - 1))
    true = np.array([(x % (k - 1) + target + 1) % k for x in raw])  # never the target
    preds = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=len(true), max_size=len(true))))
    m = backdoor_metrics(true, preds, target)
    assert m["asr"] == pytest.approx(sum(pp == target for pp in preds) / len(preds))
    assert m["triggered_accuracy"] == pytest.approx(sum(pp == t for pp, t in zip(preds, true, strict=True)) / len(true))
    assert 0 <= m["asr"] <= 1
    if k == 2:
        assert m["triggered_accuracy"] == pytest.approx(1 - m["asr"])


def test_backdoor_metrics_refuse_target_rows():
    with pytest.raises(ValueError):
        backdoor_metrics(np.array([0, 1]), np.array([1, 1]), 1)
