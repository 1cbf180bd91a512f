"""The stored record of a classification cell (see lorasec.tasks.records)."""

from __future__ import annotations

from typing import Any

from lorasec.tasks.records import Envelope, Open, Shape, TrainLog


class Scores(Open):
    """classification_metrics: accuracy, macro P/R/F1, and binary P/R/F1 for two classes."""

    accuracy: float
    f1_macro: float
    f1: float | None = None


class Backdoor(Shape):
    asr: float
    triggered_accuracy: float
    n_triggered: int
    clean_to_target: float  # the trained model's no-trigger rate of calling non-target clean rows the target


class TrainFilter(Shape):
    n_rows: int
    n_removed: int
    n_poisoned: int
    n_poisoned_removed: int
    precision: float | None
    recall: float | None


class InputFilter(Shape):
    frr: float
    clean_accepted: Scores | None
    detection_recall: float | None = None
    asr_after: float | None = None
    trigger_removed: float | None = None  # input rewriters (ONION): share of triggered rows left with no trigger word


class Metrics(Shape):
    clean: Scores
    val: Scores | None = None
    backdoor: Backdoor | None = None
    train_filter: TrainFilter | None = None
    input_filter: InputFilter | None = None


class Outputs(Shape):
    """Per sample of one evaluated set: id, true label, predicted label, class probabilities (and, on the
    triggered set, the text; under an input filter, its score and decision)."""

    ids: list[Any]
    labels: list[int]
    preds: list[int]
    probs: list[list[float]]
    texts: list[str] | None = None
    filter_scores: list[float] | None = None
    rejected: list[bool] | None = None
    filtered_texts: list[str] | None = None  # an input rewriter's (ONION's) text, and the model's answer to it
    filtered_preds: list[int] | None = None
    filtered_probs: list[list[float]] | None = None


class Poisoned(Shape):
    ids: list[Any]
    original_labels: list[int]
    trained_labels: list[int]
    trained_texts: dict[str, str]


class Defended(Shape):
    kind: str
    removed_ids: list[Any] | None = None
    train_scores: list[float | None] | None = None
    input_filter: dict[str, Any] | None = None  # what the input filter chose (its threshold)


class Data(Shape):
    n_train: int
    n_trained_on: int
    n_val: int
    n_test: int
    n_classes: int
    label_names: list[str]
    train_ids: list[Any]
    val_ids: list[Any]


class Baseline(Shape):
    key: str
    clean: Scores
    clean_to_target: float | None = None


class ClassificationResult(Shape):
    """What the classification pipeline returns (the engine adds the envelope)."""

    metrics: Metrics
    poisoned: Poisoned
    defense: Defended
    outputs: dict[str, Outputs]
    analyses: dict[str, dict[str, Any]]
    data: Data
    model: Open
    train: TrainLog
    timings: dict[str, float]
    memory: dict[str, dict[str, float | None]]


class ClassificationRecord(ClassificationResult, Envelope):
    """A stored classification row: the pipeline's result, the envelope and (attacked cells) the baseline."""

    baseline: Baseline | None = None

    @property
    def delta_cacc(self) -> float | None:
        return self.metrics.clean.accuracy - self.baseline.clean.accuracy if self.baseline else None
