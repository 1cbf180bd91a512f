"""Classification metrics against hand-computed fixtures and brute-force counting (never against scikit-learn,
which `classification_metrics` itself calls); ASR, triggered accuracy and the to-target floor by brute force."""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorasec.metrics.classification import backdoor_metrics, classification_metrics, to_target_rate


def per_class_by_hand(y: list[int], p: list[int], k: int) -> list[tuple[Fraction, Fraction, Fraction]]:
    """(precision, recall, F1) of each class 0..k-1 by counting, as exact fractions; 0 wherever a ratio is 0/0."""
    out = []
    for c in range(k):
        tp = sum(1 for a, b in zip(y, p, strict=True) if a == c and b == c)
        predicted = sum(1 for b in p if b == c)
        actual = sum(1 for a in y if a == c)
        prec = Fraction(tp, predicted) if predicted else Fraction(0)
        rec = Fraction(tp, actual) if actual else Fraction(0)
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else Fraction(0)
        out.append((prec, rec, f1))
    return out


def macro_by_hand(y: list[int], p: list[int], k: int) -> dict[str, float]:
    """Macro P/R/F1: unweighted mean over ALL k classes (absent ones count as 0), F1 averaged per class."""
    rows = per_class_by_hand(y, p, k)
    mean = [float(sum(r[i] for r in rows) / k) for i in range(3)]
    acc = Fraction(sum(a == b for a, b in zip(y, p, strict=True)), len(y))
    return {"accuracy": float(acc), "precision_macro": mean[0], "recall_macro": mean[1], "f1_macro": mean[2]}


# Three classes; class 2 is never predicted (its precision is 0/0 -> 0, zero_division=0).
#   class 0: TP 2, predicted 3, actual 3 -> P 2/3, R 2/3, F 2/3
#   class 1: TP 1, predicted 5, actual 2 -> P 1/5, R 1/2, F 2/7
#   class 2: TP 0, predicted 0, actual 3 -> P 0,   R 0,   F 0
Y3 = [0, 0, 0, 1, 1, 2, 2, 2]
P3 = [0, 1, 0, 1, 0, 1, 1, 1]


def test_macro_metrics_on_a_hand_computed_fixture() -> None:
    m = classification_metrics(np.array(Y3), np.array(P3), 3)
    assert m["accuracy"] == pytest.approx(3 / 8)
    assert m["precision_macro"] == pytest.approx((2 / 3 + 1 / 5 + 0) / 3)  # 13/45
    assert m["recall_macro"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)  # 7/18
    # Mean of the per-class F1s (20/63), NOT the F1 of macro P and macro R (which would be about 0.3337).
    assert m["f1_macro"] == pytest.approx((2 / 3 + 2 / 7 + 0) / 3)
    assert set(m) == {"accuracy", "precision_macro", "recall_macro", "f1_macro"}  # no binary keys for 3 classes
    assert all(type(v) is float for v in m.values())


def test_a_class_absent_from_labels_and_predictions_still_counts_in_the_macro_mean() -> None:
    # n_classes = 4: class 3 never occurs at all; it adds a 0 to each macro mean (divide by 4, not 3).
    m = classification_metrics(Y3, P3, 4)
    assert m["precision_macro"] == pytest.approx((2 / 3 + 1 / 5) / 4)
    assert m["recall_macro"] == pytest.approx((2 / 3 + 1 / 2) / 4)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 2 / 7) / 4)
    assert m["accuracy"] == pytest.approx(3 / 8)


def test_binary_metrics_by_hand_when_the_positive_class_is_never_predicted() -> None:
    # Class 1 (positive) never predicted: binary P = 0/0 -> 0, R = 0/2, F = 0. Class 0: P 2/4, R 2/2, F 2/3.
    # zero_division=0 is a decision, not an accident: no "ill-defined precision" warning on every evaluation.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics([1, 1, 0, 0], [0, 0, 0, 0], 2)
        classification_metrics(Y3, P3, 4)
    assert m == pytest.approx({"accuracy": 0.5, "precision_macro": 0.25, "recall_macro": 0.5, "f1_macro": 1 / 3,
                               "precision": 0.0, "recall": 0.0, "f1": 0.0})


def test_binary_metrics_use_class_one_as_positive() -> None:
    # y = 1 1 1 0 0, p = 1 0 1 1 0: class 1 TP 2, FP 1, FN 1 -> P 2/3, R 2/3; class 0: P 1/2, R 1/2.
    m = classification_metrics(np.array([1, 1, 1, 0, 0]), np.array([1, 0, 1, 1, 0]), 2)
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert m["precision_macro"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["accuracy"] == pytest.approx(3 / 5)
    # Asymmetric case: class 1 P = 1/1, R = 1/3 -> F 1/2, so swapping the positive class would show.
    m = classification_metrics([1, 1, 1, 0], [1, 0, 0, 0], 2)
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((1.0, 1 / 3, 0.5))


labels_and_preds = st.integers(2, 5).flatmap(
    lambda k: st.tuples(st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1,
                                              max_size=60))
)


@settings(deadline=None, max_examples=60)
@given(labels_and_preds)
def test_classification_metrics_equal_brute_force_counting(kp: tuple[int, list[tuple[int, int]]]) -> None:
    k, pairs = kp
    y = [a for a, _ in pairs]
    p = [b for _, b in pairs]
    m = classification_metrics(np.array(y), np.array(p), k)
    expected = macro_by_hand(y, p, k)
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key
    if k == 2:
        prec, rec, f1 = per_class_by_hand(y, p, 2)[1]
        assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((float(prec), float(rec), float(f1)), abs=1e-12)
    else:
        assert "precision" not in m and "f1" not in m


def brute_force_to_target(true: list[int], preds: list[int], target: int) -> float:
    kept = [(t, q) for t, q in zip(true, preds, strict=True) if t != target]
    return sum(q == target for _, q in kept) / len(kept)


def test_to_target_rate_by_hand() -> None:
    # Rows whose true label is not 1: positions 0, 2, 3, 4 with predictions 1, 1, 0, 2 -> 2 of 4 called 1.
    assert to_target_rate(np.array([0, 1, 2, 0, 2]), np.array([1, 1, 1, 0, 2]), 1) == 0.5
    # The target rows themselves (all predicted 1 here) must not count.
    assert to_target_rate([1, 1, 1, 0], [1, 1, 1, 0], 1) == 0.0
    assert to_target_rate([0, 0, 1], [1, 1, 0], 1) == 1.0
    assert type(to_target_rate([0, 1], [1, 1], 1)) is float


@settings(deadline=None, max_examples=60)
@given(st.integers(2, 4), st.data())
def test_to_target_rate_brute_force(k: int, data: st.DataObject) -> None:
    target = data.draw(st.integers(0, k - 1))
    true = data.draw(st.lists(st.integers(0, k - 1), min_size=1, max_size=40).filter(lambda t: any(x != target
                                                                                                    for x in t)))
    preds = data.draw(st.lists(st.integers(0, k - 1), min_size=len(true), max_size=len(true)))
    assert to_target_rate(np.array(true), np.array(preds), target) == pytest.approx(
        brute_force_to_target(true, preds, target))


@settings(deadline=None, max_examples=60)
@given(st.integers(2, 4), st.lists(st.integers(0, 3), min_size=1, max_size=60), st.data())
def test_asr_and_triggered_accuracy_brute_force(k: int, raw: list[int], data: st.DataObject) -> None:
    target = data.draw(st.integers(0, k - 1))
    true = np.array([(x % (k - 1) + target + 1) % k for x in raw])  # never the target
    preds = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=len(true), max_size=len(true))))
    m = backdoor_metrics(true, preds, target)
    assert m["asr"] == pytest.approx(sum(pp == target for pp in preds) / len(preds))
    assert m["triggered_accuracy"] == pytest.approx(sum(pp == t for pp, t in zip(preds, true, strict=True)) / len(true))
    assert m["n_triggered"] == len(true)
    assert 0 <= m["asr"] <= 1
    if k == 2:
        assert m["triggered_accuracy"] == pytest.approx(1 - m["asr"])


def test_backdoor_metrics_by_hand() -> None:
    # Three classes, target 2: true labels 0 0 1 1 1, predictions 2 0 2 0 1 -> ASR 2/5, triggered accuracy 2/5,
    # and one row (true 1, predicted 0) is neither: the two do not sum to 1 beyond two classes.
    m = backdoor_metrics([0, 0, 1, 1, 1], [2, 0, 2, 0, 1], 2)
    assert m == {"asr": pytest.approx(0.4), "triggered_accuracy": pytest.approx(0.4), "n_triggered": 5}


def test_backdoor_metrics_refuse_target_rows() -> None:
    with pytest.raises(ValueError, match="must exclude the target class"):
        backdoor_metrics(np.array([0, 1]), np.array([1, 1]), 1)
    with pytest.raises(ValueError, match=r"^triggered rows must exclude the target class$"):
        backdoor_metrics([2, 0], [0, 0], 0)
