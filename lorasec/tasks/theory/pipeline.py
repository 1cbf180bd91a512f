"""The theory pipeline, top to bottom: train the attacked cell and its clean twin (the classification pipeline),
rebuild their shared initialisation, choose probes, compute kernels, derive the numbers, return the record.

Seeds: the theory task's stages begin with the classification task's, so `seeds` restricted to those is exactly
what the engine gives the classification cell of the same seed; both trainings use them (the twin differs only
by its attack) and the initialisation is rebuilt from the same `head` and `adapt` seeds.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lorasec.analyses import m_delta
from lorasec.analyses.adapter_export import exported, restore
from lorasec.config import LoraMethod
from lorasec.environment import Stages, release_freed_memory
from lorasec.metrics.classification import predict_proba
from lorasec.metrics.ntk import encode_probes, entk, flat, param_names, parameter_count
from lorasec.metrics.spectra import effective_rank, eigenvalues, proxies, renyi_entropy
from lorasec.store import config_key
from lorasec.tasks.base import TaskOutput
from lorasec.tasks.classification import TASK as CLASSIFICATION
from lorasec.tasks.classification import baseline as clean_twin
from lorasec.tasks.classification.pipeline import Prepared, evaluate, fit, prepare
from lorasec.tasks.classification.record import ClassificationResult
from lorasec.tasks.theory import TheoryConfig

PEFT_DEFAULT_INIT_SCALE = 1 / 3  # peft's kaiming_uniform(a=sqrt(5)) on A: Var = 1 / (3 d_in)


def _sig(x: float) -> float:
    return float(f"{x:.7g}")


def _matrix(k: torch.Tensor) -> list:
    """A kernel as nested lists at 7 significant digits (float32 precision): small and JSON-safe."""
    return np.vectorize(_sig)(k.numpy()).tolist()


def choose_probes(splits, poisoned, triggered, cfg: TheoryConfig, rng: np.random.Generator) -> dict:
    """Probe texts in groups: poisoned training rows as trained (x̃_c) and as they were (x_c), other training rows,
    clean test rows, triggered test rows. Groups are index lists into `texts`."""
    p = cfg.probes
    pos = poisoned.poisoned
    pairs = np.sort(rng.choice(pos, size=min(p.n_pairs, len(pos)), replace=False)) if len(pos) else pos
    rest = np.setdiff1d(np.arange(len(poisoned.clean)), pos)
    others = np.sort(rng.choice(rest, size=min(p.n_clean_train, len(rest)), replace=False))
    test = np.sort(rng.choice(len(splits.test), size=min(p.n_test, len(splits.test)), replace=False))
    trig = (np.sort(rng.choice(len(triggered), size=min(p.n_test, len(triggered)), replace=False))
            if triggered is not None else np.array([], dtype=int))
    parts = [
        ("pairs_clean", [poisoned.clean.texts[i] for i in pairs], poisoned.clean.ids[pairs]),
        ("pairs_poisoned", [poisoned.data.texts[i] for i in pairs], poisoned.clean.ids[pairs]),
        ("clean_train", [poisoned.clean.texts[i] for i in others], poisoned.clean.ids[others]),
        ("test_clean", [splits.test.texts[i] for i in test], splits.test.ids[test]),
        ("test_triggered", [triggered.texts[i] for i in trig] if triggered is not None else [],
         triggered.ids[trig] if triggered is not None else np.array([])),
    ]
    texts: list[str] = []
    groups: dict[str, list[int]] = {}
    ids: list = []
    for name, t, i in parts:
        groups[name] = list(range(len(texts), len(texts) + len(t)))
        texts += t
        ids += [x.item() if hasattr(x, "item") else x for x in i]
    return {"texts": texts, "ids": ids, "groups": groups}


def kernel_numbers(k: torch.Tensor, groups: dict[str, list[int]], alpha: float) -> tuple[dict, list[float]]:
    """M′ (absolute, and relative to the clean rows' own kernel), trace, spectrum, effective rank and Rényi entropy
    of the kernel on the clean training probes (pairs_clean + clean_train)."""
    kn = k.numpy()
    pc, pp = groups["pairs_clean"], groups["pairs_poisoned"]
    m_prime = m_prime_rel = None  # no poisoned rows (a label flip that flipped nothing): no pairs to measure
    if pc:
        cross = np.linalg.norm(kn[pc, pp].mean(axis=0))  # ‖mean over pairs of K(x_c, x̃_c)‖_F, a (C, C) block
        own = np.mean([np.linalg.norm(kn[i, i]) for i in pc])
        m_prime, m_prime_rel = float(cross), float(cross / own) if own > 0 else 0.0
    train = pc + groups["clean_train"]
    block = flat(k[train][:, train]).numpy()
    eigs = eigenvalues(block)
    out = {
        "m_prime": m_prime,
        "m_prime_rel": m_prime_rel,
        "trace_per_input": float(np.trace(block) / len(train)),
        "effective_rank": effective_rank(eigs),
        "renyi": renyi_entropy(block, alpha),
    }
    return out, [_sig(x) for x in eigs]


def effective_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight of the model as the forward pass uses it (LoRA merged: W + (α/r) B A), by module name, so
    full fine-tuning and LoRA updates are measured in the same coordinates."""
    m = copy.deepcopy(model)
    if hasattr(m, "merge_and_unload"):
        m = m.merge_and_unload()
    return {n: p.detach().double() for n, p in m.named_parameters()}


def update_distance(init: dict, a: dict, b: dict) -> float:
    """‖(a − init) − (b − init)‖ / ‖a − init‖ over the common names: M with a = clean, b = poisoned."""
    num = math.sqrt(sum(float(((a[n] - b[n]) ** 2).sum()) for n in init))
    den = math.sqrt(sum(float(((a[n] - init[n]) ** 2).sum()) for n in init))
    return num / den if den > 0 else 0.0


def centred_logits(model: nn.Module, tokenizer, ds, cfg) -> np.ndarray:
    """Log-probabilities minus their class mean: the logits up to the softmax's free constant."""
    logp = np.log(np.clip(predict_proba(model, tokenizer, ds, cfg.eval.batch_size, cfg.eval.max_length), 1e-300, 1))
    return logp - logp.mean(axis=1, keepdims=True)


def cell_proxies(method, layers: dict[str, dict], hidden: int) -> dict | None:
    """H1′, H2′ for LoRA (init variance from the config, or peft's default), and for full fine-tuning at its
    coincidence point r = d, scale = 1; None for head-only (no adapter: the proxies say nothing)."""
    if isinstance(method, LoraMethod):
        d = int(np.median([x["n"] for x in layers.values()])) if layers else hidden
        scale = method.init_scale if method.init_scale is not None else PEFT_DEFAULT_INIT_SCALE
        return proxies(method.rank, scale, d) | {"d": d, "init_scale": scale}
    if method.kind == "full":
        return proxies(hidden, 1.0, hidden) | {"d": hidden, "init_scale": 1.0}
    return None


def trained_cell(c, seeds: dict[str, int], progress: bool, root: Path | None) -> tuple[Prepared, dict, bool]:
    """One classification cell trained: read from its stored export (`analyses: [{kind: adapter_export}]` in a
    store beside this one) when there is one, else trained here. Returns the prepared cell with its trained model,
    its record (what the classification pipeline would store) and whether the training was read, not run."""
    p = prepare(c, seeds)
    where = root / config_key(c) if root is not None else None
    reused = exported(where)
    if reused:
        train_log = restore(p.adapted.model, c.method, p.adapted.trainable, where)
        p.adapted.model.eval()
    else:
        train_log = asdict(fit(p, c, seeds, progress))
    return p, evaluate(p, c, seeds, train_log, progress), reused


def run(cfg: TheoryConfig, seeds: dict[str, int], progress: bool = True,
        artifacts: Path | None = None) -> TaskOutput:
    """Run one theory cell: its record (no model is kept)."""
    stages = Stages()
    cell, twin = cfg.cell, clean_twin(cfg.cell)
    cls_seeds = {s: seeds[s] for s in CLASSIFICATION.stages}
    root = artifacts.parent if artifacts is not None else None  # every cell's artifacts sit side by side
    attacked_p, attacked_record, attacked_reused = trained_cell(cell, cls_seeds, progress, root)
    stages.done("train_poisoned")
    clean_p, clean_record, clean_reused = trained_cell(twin, cls_seeds, progress, root)
    stages.done("train_clean")

    # the shared initialisation and the probes, from the same components and seeds as the two runs
    init_p = prepare(cell, cls_seeds)
    splits, poisoned, triggered, clf = init_p.splits, init_p.poisoned, init_p.triggered, init_p.clf
    init = init_p.adapted.model.eval()
    probes = choose_probes(splits, poisoned, triggered, cfg, np.random.default_rng(seeds["probe"]))
    enc = encode_probes(clf.tokenizer, probes["texts"], cfg.probes.max_length)
    names = param_names(init, cfg.params)
    stages.done("setup")

    models = {"init": init, "clean": clean_p.adapted.model, "poisoned": attacked_p.adapted.model}
    kernels = {k: entk(m, enc, names) for k, m in models.items()}
    stages.done("kernels")

    numbers, spectra = {}, {}
    for k, K in kernels.items():
        numbers[k], spectra[k] = kernel_numbers(K, probes["groups"], cfg.alpha)
    wanted = set(names)
    params = {k: {n: p.detach().double() for n, p in m.named_parameters() if n in wanted} for k, m in models.items()}
    m_params = update_distance(params["init"], params["clean"], params["poisoned"])
    del params
    weights = {k: effective_weights(m) for k, m in models.items()}
    m_weights = update_distance(weights["init"], weights["clean"], weights["poisoned"])
    del weights
    logits = {k: centred_logits(m, clf.tokenizer, splits.test, cell) for k, m in models.items()}
    fn_num = float(np.linalg.norm(logits["clean"] - logits["poisoned"]))
    fn_den = float(np.linalg.norm(logits["clean"] - logits["init"]))
    layers = {k: m_delta.layers(m, cell.method) for k, m in models.items()}
    hidden = int(getattr(getattr(clf.model, "config", None), "hidden_size", 0) or 0)
    stages.done("derive")

    typed = {k: ClassificationResult.model_validate(r | {"analyses": {}, "timings": {}, "memory": {}})
             for k, r in (("poisoned", attacked_record), ("clean", clean_record))}
    am, cm = typed["poisoned"].metrics, typed["clean"].metrics
    metrics = {
        "cacc": am.clean.accuracy,
        "cacc_clean": cm.clean.accuracy,
        "delta_cacc": am.clean.accuracy - cm.clean.accuracy,
        "asr": am.backdoor.asr if am.backdoor else None,
        "m_params": m_params,
        "m_weights": m_weights,
        "m_function": fn_num / fn_den if fn_den > 0 else 0.0,
        "kernel": numbers,
        "m_delta": {k: m_delta.summary(v) for k, v in layers.items()},
        "proxies": cell_proxies(cell.method, layers["init"], hidden),
    }
    n, _, c, _ = kernels["init"].shape
    record = {
        "metrics": metrics,
        "kernels": {"shape": [n, n, c, c], "params": cfg.params, "n_params": parameter_count(init, names),
                    **{k: _matrix(K) for k, K in kernels.items()}},
        "spectra": spectra,
        "m_delta": layers,
        "probes": probes,
        "cells": {"poisoned": {"key": config_key(cell), "metrics": attacked_record["metrics"],
                               "poisoned_ids": typed["poisoned"].poisoned.ids, "reused": attacked_reused},
                  "clean": {"key": config_key(twin), "metrics": clean_record["metrics"], "reused": clean_reused}},
        "model": attacked_record["model"],
        "train": {"poisoned": attacked_record["train"], "clean": clean_record["train"]},
        "data": {k: v for k, v in attacked_record["data"].items() if k not in ("train_ids", "val_ids")},
        "timings": stages.timings,
        "memory": stages.memory,
    }
    release_freed_memory()
    return TaskOutput(record, None)
