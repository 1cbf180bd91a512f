"""The stored record of a memorization cell (see lorasec.tasks.records)."""

from __future__ import annotations

from typing import Any

from lorasec.tasks.records import Envelope, Open, Shape, TrainLog


class ExposureRow(Shape):
    """One canary: its secret, how often it was inserted, exact rank (enumeration) or none (skew-normal estimate)."""

    secret: int
    count: int
    method: str
    rank: int | None
    exposure: float
    score: float


class Roc(Open):
    auc: float
    auc_mean: float
    auc_std: float
    tpr_at_fpr: dict[float, float]  # JSON stores the keys as strings


class Utility(Shape):
    member_nll: float
    held_out_nll: float
    base_member_nll: float
    base_held_out_nll: float
    member_ppl: float
    held_out_ppl: float
    base_member_ppl: float
    base_held_out_ppl: float


class Metrics(Shape):
    extraction: Open  # ExtractionSummary: exact_rate, relaxed_rate, mean_* ...
    extraction_by_duplication: dict[str, Open]
    exposure: list[ExposureRow]
    mia: dict[str, Roc]  # by score name: loss, reference, zlib, min_k, min_k_pp
    utility: Utility
    # the one-run audit (config `audit`): epsilon_lower_bound, guesses, correct, confidence, score, canaries
    audit: Open | None = None


class RecordOutput(Open):
    """One member record: its prompt, true and generated ids and every similarity score."""

    id: str
    member: bool
    duplicates: int
    prompt_ids: list[int]
    true_ids: list[int]
    generated_ids: list[int]
    generated_text: str
    scores: dict[str, Any]


class Outputs(Shape):
    records: list[RecordOutput]
    mia: list[dict[str, Any]]  # per member and non-member: id, member, every MIA score
    canaries: list[dict[str, Any]]
    audit: list[dict[str, Any]] | None = None  # per audit canary: index, included (the coin), score, ids


class Poisoned(Shape):
    ids: list[str]
    training_sources: list[str]
    duplicates: dict[str, int]


class MemorizationResult(Shape):
    metrics: Metrics
    outputs: Outputs
    poisoned: Poisoned
    data: Open
    model: Open
    train: TrainLog
    timings: dict[str, float]
    memory: dict[str, dict[str, float | None]]


class MemorizationRecord(MemorizationResult, Envelope):
    """A stored memorization row."""
