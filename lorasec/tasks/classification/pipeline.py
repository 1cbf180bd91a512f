"""The classification pipeline, top to bottom: config -> model, data, attack, method -> train -> evaluate -> result.

Every stage is a plain function; this file only wires them. The returned record is what the store keeps
(the engine adds the config, seeds and environment): enough to recompute every number without rerunning
(poisoned row ids, per-sample predictions).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from lorasec.attacks import poison, triggered_test_set
from lorasec.data import load_splits
from lorasec.data.text import TextDataset
from lorasec.environment import Stages
from lorasec.methods import adapt
from lorasec.metrics.classification import (
    backdoor_metrics,
    classification_metrics,
    predict_proba,
    to_target_rate,
)
from lorasec.models.classifier import load_classifier
from lorasec.tasks.base import TaskOutput
from lorasec.tasks.classification import ClassificationConfig
from lorasec.train import train


def outputs(ds: TextDataset, probs: np.ndarray) -> dict:
    """Per-sample record: id, true label, predicted label, class probabilities."""
    return {"ids": ds.ids.tolist(), "labels": ds.labels.tolist(), "preds": probs.argmax(1).tolist(),
            "probs": np.round(probs, 6).tolist()}


def run(cfg: ClassificationConfig, seeds: dict[str, int], progress: bool = True) -> TaskOutput:
    """Run one classification audit cell: its result record and the trained model."""
    stages = Stages()
    splits = load_splits(cfg.data, cfg.seed)
    poisoned = poison(splits.train, cfg.attack, np.random.default_rng(seeds["poison"]))
    triggered = triggered_test_set(splits.test, cfg.attack, np.random.default_rng(seeds["trigger"]))
    clf = load_classifier(cfg.model, splits.train.n_classes, seeds["head"])
    adapted = adapt(clf.model, cfg.method, seeds["adapt"])
    stages.done("setup")

    log = train(adapted, clf.tokenizer, poisoned.data, cfg.train, cfg.lr(), seeds["train"], progress=progress,
                label=cfg.label())
    stages.done("train")

    model = adapted.model
    ev = cfg.eval
    clean_probs = predict_proba(model, clf.tokenizer, splits.test, ev.batch_size, ev.max_length, progress)
    metrics: dict = {"clean": classification_metrics(splits.test.labels, clean_probs.argmax(1), splits.test.n_classes)}
    per_sample = {"clean": outputs(splits.test, clean_probs)}
    if triggered is not None:
        trig_probs = predict_proba(model, clf.tokenizer, triggered, ev.batch_size, ev.max_length, progress)
        metrics["backdoor"] = backdoor_metrics(triggered.labels, trig_probs.argmax(1), cfg.attack.target)
        metrics["backdoor"]["clean_to_target"] = to_target_rate(splits.test.labels, clean_probs.argmax(1),
                                                                cfg.attack.target)
        per_sample["triggered"] = outputs(triggered, trig_probs) | {"texts": list(triggered.texts)}
    stages.done("eval")

    rows = poisoned.poisoned
    changed_text = [i for i in rows if poisoned.data.texts[i] != poisoned.clean.texts[i]]
    record = {
        "metrics": metrics,
        "poisoned": {
            "ids": poisoned.clean.ids[rows].tolist(),
            "original_labels": poisoned.clean.labels[rows].tolist(),
            "trained_labels": poisoned.data.labels[rows].tolist(),
            "trained_texts": {str(poisoned.clean.ids[i]): poisoned.data.texts[i] for i in changed_text},
        },
        "outputs": per_sample,
        "data": {"n_train": len(splits.train), "n_val": len(splits.val), "n_test": len(splits.test),
                 "n_classes": splits.train.n_classes, "label_names": list(splits.train.label_names),
                 "train_ids": splits.train.ids.tolist()},
        "model": clf.info | {"trainable_params": adapted.n_trainable, "total_params": adapted.n_total},
        "train": asdict(log),
        "timings": stages.timings,
        "memory": stages.memory,
    }
    return TaskOutput(record, model)
