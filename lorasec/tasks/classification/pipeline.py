"""The classification pipeline, top to bottom: config -> data, poison, defend -> model, adapt -> train -> analyse
-> evaluate (validation, test, triggered test; with the defense's input filter) -> result.

Every stage is a plain function; this file only wires them. The returned record is what the store keeps
(the engine adds the config, seeds and environment): enough to recompute every number without rerunning
(poisoned and removed row ids, per-sample predictions on every split, each filter's score and decision).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lorasec.analyses import Trained, run_analyses
from lorasec.attacks import poison, triggered_test_set
from lorasec.data import load_splits
from lorasec.data.text import TextDataset
from lorasec.defenses import DEFENSES, Context
from lorasec.environment import Stages
from lorasec.methods import adapt
from lorasec.metrics.classification import (
    backdoor_metrics,
    classification_metrics,
    head_features,
    predict_proba,
    to_target_rate,
)
from lorasec.models.causal import load_causal_lm
from lorasec.models.classifier import load_classifier
from lorasec.tasks.base import TaskOutput
from lorasec.tasks.classification import ClassificationConfig
from lorasec.train import TrainLog, train


def outputs(ds: TextDataset, probs: np.ndarray) -> dict:
    """Per-sample record: id, true label, predicted label, class probabilities."""
    return {"ids": ds.ids.tolist(), "labels": ds.labels.tolist(), "preds": probs.argmax(1).tolist(),
            "probs": np.round(probs, 6).tolist()}


def removal_metrics(removed: np.ndarray, poisoned: np.ndarray, n: int) -> dict:
    """Precision and recall of a training-set filter's removed rows against the poisoned rows (positions)."""
    removed, poisoned = set(removed.tolist()), set(poisoned.tolist())
    hit = len(removed & poisoned)
    return {"n_rows": n, "n_removed": len(removed), "n_poisoned": len(poisoned), "n_poisoned_removed": hit,
            "precision": hit / len(removed) if removed else None,
            "recall": hit / len(poisoned) if poisoned else None}


def filtered_metrics(labels: np.ndarray, preds: np.ndarray, rejected: np.ndarray, n_classes: int) -> dict:
    """Clean accuracy over the inputs the filter answers, and the share it rejects (FRR on clean inputs)."""
    kept = ~rejected
    out = {"rejected_share": float(rejected.mean()) if len(rejected) else 0.0}
    return out | {"accepted": classification_metrics(labels[kept], preds[kept], n_classes) if kept.any() else None}


def trigger_words(attack: Any) -> tuple[str, ...]:
    """The words an attack's trigger is made of (prefix, rare-word, multi-trigger, instruction), or none."""
    words = getattr(attack, "triggers", None) or ((attack.trigger,) if isinstance(getattr(attack, "trigger", None),
                                                                                  str) else ())
    return tuple(w for t in words for w in t.split())


def screen(p: Prepared, cfg: ClassificationConfig, seeds: dict[str, int], probs: dict[str, np.ndarray],
           per_sample: dict, progress: bool) -> tuple[dict, dict]:
    """The defense's input filter on the clean and triggered test sets: each input's score and decision (and, for a
    filter that rewrites inputs, the rewritten text and the model's answer to it) into `per_sample`; the metrics
    read with rejected inputs taken out; and what the filter chose (its threshold)."""
    model, tokenizer, ev = p.adapted.model, p.clf.tokenizer, cfg.eval
    n_classes = p.splits.test.n_classes

    def predict(texts: list[str] | tuple[str, ...]) -> np.ndarray:
        return predict_proba(model, tokenizer, texts_dataset(texts, n_classes), ev.batch_size, ev.max_length)

    def language_model() -> tuple[Any, Any]:
        lm = load_causal_lm(cfg.defense.scorer)
        return lm.model, lm.tokenizer

    ctx = Context(val=p.splits.val, model=model, tokenizer=tokenizer, rng=np.random.default_rng(seeds["defend"]),
                  predict=predict, language_model=language_model, progress=progress)
    defense = DEFENSES.get(cfg.defense.kind)
    sets = {"clean": p.splits.test} | ({"triggered": p.triggered} if p.triggered is not None else {})
    rejected, preds, info = {}, {}, {}
    for name, ds in sets.items():
        verdict = defense.input_filter(ds, cfg.defense, ctx)
        out = {"filter_scores": [float(x) for x in verdict.scores], "rejected": [bool(x) for x in verdict.rejected]}
        preds[name] = probs[name].argmax(1)
        if verdict.texts is not None:
            after = predict(verdict.texts)
            preds[name] = after.argmax(1)
            out |= {"filtered_texts": list(verdict.texts), "filtered_preds": preds[name].tolist(),
                    "filtered_probs": np.round(after, 6).tolist()}
        per_sample[name] |= out
        rejected[name] = verdict.rejected
        info |= verdict.info
    filt = filtered_metrics(p.splits.test.labels, preds["clean"], rejected["clean"], n_classes)
    metrics: dict = {"frr": filt["rejected_share"], "clean_accepted": filt["accepted"]}
    if p.triggered is not None:
        rej = rejected["triggered"]
        hit = (preds["triggered"] == cfg.attack.target) & ~rej
        metrics |= {"detection_recall": float(rej.mean()), "asr_after": float(hit.mean()) if len(hit) else None}
        words = trigger_words(cfg.attack)
        texts = per_sample["triggered"].get("filtered_texts")
        if words and texts is not None:
            metrics["trigger_removed"] = float(np.mean([not any(w in t.split() for w in words) for t in texts]))
    return metrics, info


@dataclass
class Prepared:
    """A cell up to training: its splits, the poisoned (and defended) training set, the triggered test set and the
    adapted model at its initialisation."""

    splits: Any
    poisoned: Any  # PoisonedDataset
    triggered: TextDataset | None
    kept: Any  # Kept, or None without a training-set filter
    train_set: TextDataset
    clf: Any  # Classifier: model, tokenizer, info
    adapted: Any  # Adapted


def texts_dataset(texts: list[str] | tuple[str, ...], n_classes: int) -> TextDataset:
    """Bare texts as a dataset (for a defense asking the model about inputs it made itself)."""
    n = len(texts)
    return TextDataset(np.arange(n).astype(str), tuple(texts), np.zeros(n, dtype=np.int64), n_classes)


def representer(cfg: ClassificationConfig, seeds: dict[str, int], poisoned_set: TextDataset, progress: bool):
    """`represent(ds, which)` for training-set filters: [CLS] features of the base model, or of a model of the cell's
    own method first trained on the whole poisoned set (same seeds, so it is the undefended cell's model)."""

    def represent(ds: TextDataset, which: str) -> np.ndarray:
        clf = load_classifier(cfg.model, ds.n_classes, seeds["head"])
        model = clf.model
        if which == "poisoned":
            adapted = adapt(clf.model, cfg.method, seeds["adapt"])
            train(adapted, clf.tokenizer, poisoned_set, cfg.train, cfg.lr(), seeds["train"], progress=progress,
                  label=f"{cfg.label()} (representations)", dp=cfg.method.dp)
            model = adapted.model
        return head_features(model, clf.tokenizer, ds, cfg.eval.batch_size, cfg.eval.max_length, progress)

    return represent


def prepare(cfg: ClassificationConfig, seeds: dict[str, int], progress: bool = False) -> Prepared:
    """Data, poison, defend (training-set filter), model and method: everything before the first step."""
    splits = load_splits(cfg.data, cfg.seed)
    poisoned = poison(splits.train, cfg.attack, np.random.default_rng(seeds["poison"]))
    triggered = triggered_test_set(splits.test, cfg.attack, np.random.default_rng(seeds["trigger"]))
    defense = DEFENSES.get(cfg.defense.kind)
    kept = None
    if defense.train_filter is not None:
        ctx = Context(val=splits.val, rng=np.random.default_rng(seeds["defend"]), progress=progress,
                      represent=representer(cfg, seeds, poisoned.data, progress))
        kept = defense.train_filter(poisoned.data, cfg.defense, ctx)
    train_set = poisoned.data.subset(kept.rows) if kept is not None else poisoned.data
    clf = load_classifier(cfg.model, splits.train.n_classes, seeds["head"])
    adapted = adapt(clf.model, cfg.method, seeds["adapt"])
    return Prepared(splits, poisoned, triggered, kept, train_set, clf, adapted)


def fit(p: Prepared, cfg: ClassificationConfig, seeds: dict[str, int], progress: bool = True) -> TrainLog:
    """Train the prepared model in place."""
    return train(p.adapted, p.clf.tokenizer, p.train_set, cfg.train, cfg.lr(), seeds["train"], progress=progress,
                 label=cfg.label(), dp=cfg.method.dp)


def run(cfg: ClassificationConfig, seeds: dict[str, int], progress: bool = True,
        artifacts: Path | None = None) -> TaskOutput:
    """Run one classification audit cell: its result record and the trained model."""
    stages = Stages()
    p = prepare(cfg, seeds, progress)
    stages.done("setup")
    log = fit(p, cfg, seeds, progress)
    stages.done("train")
    analyses = run_analyses(Trained(p.adapted.model, p.clf.tokenizer, cfg.method, p.adapted.trainable, artifacts,
                                    asdict(log)), cfg.analyses)
    if cfg.analyses:
        stages.done("analyses")
    record = evaluate(p, cfg, seeds, asdict(log), progress)
    stages.done("eval")
    record |= {"analyses": analyses, "timings": stages.timings, "memory": stages.memory}
    return TaskOutput(record, p.adapted.model)


def evaluate(p: Prepared, cfg: ClassificationConfig, seeds: dict[str, int], train_log: dict,
             progress: bool = True) -> dict:
    """The trained model on the validation, test and triggered test sets (through the defense's input filter when
    it has one): the record's metrics, per-sample outputs, poisoned and removed rows, data and model."""
    splits, poisoned, triggered, kept = p.splits, p.poisoned, p.triggered, p.kept
    model, tokenizer = p.adapted.model, p.clf.tokenizer
    ev = cfg.eval
    n_classes = splits.test.n_classes
    clean_probs = predict_proba(model, tokenizer, splits.test, ev.batch_size, ev.max_length, progress)
    metrics: dict = {"clean": classification_metrics(splits.test.labels, clean_probs.argmax(1), n_classes)}
    per_sample = {"clean": outputs(splits.test, clean_probs)}
    if len(splits.val):
        val_probs = predict_proba(model, tokenizer, splits.val, ev.batch_size, ev.max_length, progress)
        metrics["val"] = classification_metrics(splits.val.labels, val_probs.argmax(1), n_classes)
        per_sample["val"] = outputs(splits.val, val_probs)
    trig_probs = None
    if triggered is not None:
        trig_probs = predict_proba(model, tokenizer, triggered, ev.batch_size, ev.max_length, progress)
        metrics["backdoor"] = backdoor_metrics(triggered.labels, trig_probs.argmax(1), cfg.attack.target)
        metrics["backdoor"]["clean_to_target"] = to_target_rate(splits.test.labels, clean_probs.argmax(1),
                                                                cfg.attack.target)
        per_sample["triggered"] = outputs(triggered, trig_probs) | {"texts": list(triggered.texts)}

    defended: dict = {"kind": cfg.defense.kind}
    if kept is not None:
        removed = np.setdiff1d(np.arange(len(poisoned.data)), kept.rows)
        defended["removed_ids"] = poisoned.clean.ids[removed].tolist()
        defended["train_scores"] = [None if np.isnan(x) else float(x) for x in kept.scores]
        metrics["train_filter"] = removal_metrics(removed, poisoned.poisoned, len(poisoned.data))
    if DEFENSES.get(cfg.defense.kind).input_filter is not None:
        probs = {"clean": clean_probs} | ({"triggered": trig_probs} if triggered is not None else {})
        metrics["input_filter"], defended["input_filter"] = screen(p, cfg, seeds, probs, per_sample, progress)

    rows = poisoned.poisoned
    changed_text = [i for i in rows if poisoned.data.texts[i] != poisoned.clean.texts[i]]
    return {
        "metrics": metrics,
        "poisoned": {
            "ids": poisoned.clean.ids[rows].tolist(),
            "original_labels": poisoned.clean.labels[rows].tolist(),
            "trained_labels": poisoned.data.labels[rows].tolist(),
            "trained_texts": {str(poisoned.clean.ids[i]): poisoned.data.texts[i] for i in changed_text},
        },
        "defense": defended,
        "outputs": per_sample,
        "data": {"n_train": len(splits.train), "n_trained_on": len(p.train_set), "n_val": len(splits.val),
                 "n_test": len(splits.test), "n_classes": splits.train.n_classes,
                 "label_names": list(splits.train.label_names), "train_ids": splits.train.ids.tolist(),
                 "val_ids": splits.val.ids.tolist()},
        "model": p.clf.info | {"trainable_params": p.adapted.n_trainable, "total_params": p.adapted.n_total},
        "train": train_log,
    }
