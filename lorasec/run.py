"""The classification pipeline, top to bottom: config -> model, data, attack, method -> train -> evaluate -> result.

Every stage is a plain function; this file only wires them. The returned dict is what the store keeps:
enough to recompute every number without rerunning (poisoned row ids, per-sample predictions).
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from lorasec.attacks import poison, triggered_test_set
from lorasec.config import ExperimentConfig
from lorasec.data import load_splits
from lorasec.data.text import TextDataset
from lorasec.environment import environment
from lorasec.methods import adapt
from lorasec.metrics.classification import (
    backdoor_metrics,
    classification_metrics,
    predict_proba,
    to_target_rate,
)
from lorasec.models import load_classifier
from lorasec.store import config_key
from lorasec.train import train

STAGES = ("poison", "trigger", "head", "train", "adapt")  # append only: a child's seed depends on its position


def stage_seeds(seed: int, names: tuple[str, ...] = STAGES) -> dict[str, int]:
    """One independent seed per stage, so changing the attack leaves head init and batch order unchanged."""
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {n: int(c.generate_state(1)[0]) for n, c in zip(names, children, strict=True)}


def outputs(ds: TextDataset, probs: np.ndarray) -> dict:
    """Per-sample record: id, true label, predicted label, class probabilities."""
    return {"ids": ds.ids.tolist(), "labels": ds.labels.tolist(), "preds": probs.argmax(1).tolist(),
            "probs": np.round(probs, 6).tolist()}


def run(cfg: ExperimentConfig, progress: bool = True) -> dict:
    """Run one classification audit cell and return its full result record."""
    t0 = time.perf_counter()
    seeds = stage_seeds(cfg.seed)
    splits = load_splits(cfg.data, cfg.seed)
    poisoned = poison(splits.train, cfg.attack, np.random.default_rng(seeds["poison"]))
    triggered = triggered_test_set(splits.test, cfg.attack, np.random.default_rng(seeds["trigger"]))
    clf = load_classifier(cfg.model, splits.train.n_classes, seeds["head"])
    adapted = adapt(clf.model, cfg.method, seeds["adapt"])
    t1 = time.perf_counter()

    log = train(adapted, clf.tokenizer, poisoned.data, cfg.train, cfg.lr(), seeds["train"], progress=progress)
    t2 = time.perf_counter()

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
    t3 = time.perf_counter()

    rows = poisoned.poisoned
    changed_text = [i for i in rows if poisoned.data.texts[i] != poisoned.clean.texts[i]]
    return {
        "key": config_key(cfg),
        "label": cfg.label(),
        "config": cfg.model_dump(mode="json"),
        "seeds": seeds,
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
        "timings": {"setup_s": t1 - t0, "train_s": t2 - t1, "eval_s": t3 - t2, "total_s": t3 - t0},
        "environment": environment(),
    }
