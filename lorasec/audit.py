"""The engine: run any task's cell (or reuse it from the store), attach its clean baseline, save atomically.

It never names a task: the task registry says how to run a cell and which clean baseline it is read
against. The engine, not the task, adds the envelope every stored result has (key, label, config, stage
seeds, environment, total time) and is the only part that talks to the store. An attacked cell always
carries its clean baseline, so an attack's effect is read as a difference. Nothing touches the store until
every run has succeeded.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorasec.config import TaskConfig
from lorasec.seeds import stage_seeds
from lorasec.store import artifacts_dir, config_key, load, open_store, save
from lorasec.tasks import task_of


@dataclass
class Run:
    """One executed cell: the record the store keeps and, when asked for, the trained model."""

    record: dict[str, Any]
    model: Any = None


def execute(cfg: TaskConfig, progress: bool = True, keep_model: bool = False, store: Path | None = None) -> Run:
    """Run one cell of any task: stage seeds in, record with its envelope out. Nothing is saved; `store` only says
    where the cell's files (an exported adapter) go: its artifact directory beside that store."""
    from lorasec.environment import bound_allocator, environment, native_bf16  # torch: only when a cell runs

    bound_allocator()
    task = task_of(cfg)
    if getattr(getattr(cfg, "train", None), "precision", None) == "bf16" and native_bf16() is False:
        _warn_emulated_bf16()
    seeds = stage_seeds(cfg.seed, task.stages)
    t0 = time.perf_counter()
    out = task.run(cfg, seeds, progress, artifacts_dir(store, config_key(cfg)) if store is not None else None)
    total = time.perf_counter() - t0
    record = {
        "key": config_key(cfg),
        "label": cfg.label(),
        "config": cfg.model_dump(mode="json"),
        "seeds": seeds,
        **out.record,
        "timings": {**out.record.get("timings", {}), "total_s": total},
        "environment": environment(),
    }
    if task.record is not None:
        task.record.parse(record)  # the record has the shape its readers expect, or the cell fails here
    return Run(record, out.model if keep_model else None)


@functools.cache
def _warn_emulated_bf16() -> None:
    warnings.warn("train.precision: bf16 on a CPU without AVX-512 BF16 or AMX is emulated and runs many times "
                  "slower than fp32 here (20 s against 1.4 s a MiniLM step on an AVX2-only CPU)", stacklevel=3)


def baseline_of(cfg: TaskConfig) -> TaskConfig | None:
    """The clean twin an attacked cell is read against; None when the cell is clean or its task has none."""
    return task_of(cfg).baseline(cfg)


def attach_baseline(result: dict, base: dict, cfg: TaskConfig) -> dict:
    """Keep in an attacked cell's record what its task reads of the clean baseline (at least its key)."""
    summary = task_of(cfg).baseline_summary
    result["baseline"] = summary(result, base, cfg) if summary else {"key": base["key"]}
    return result


def _stored(store: Path, key: str) -> dict | None:
    if not Path(store).exists():  # looking must not create the store
        return None
    con = open_store(store)
    try:
        return load(con, key)
    finally:
        con.close()


def audit(cfg: TaskConfig, store: Path, force: bool = False, progress: bool = True) -> dict:
    """Result of `cfg` from the store, or run it (and its baseline when missing) and save both."""
    key = config_key(cfg)
    if not force and (hit := _stored(store, key)) is not None:
        return hit | {"cached": True}
    result = execute(cfg, progress, store=store).record
    fresh = [result]
    base_cfg = baseline_of(cfg)
    if base_cfg is not None:
        base = _stored(store, config_key(base_cfg))
        if base is None:
            base = execute(base_cfg, progress, store=store).record
            fresh.insert(0, base)
        attach_baseline(result, base, cfg)
    con = open_store(store)
    try:
        for r in fresh:
            save(con, r, replace=force)
    finally:
        con.close()
    return result | {"cached": False}


def audit_all(cfgs: Iterable[TaskConfig], store: Path, progress: bool = True) -> list[dict]:
    """Audit cells in order, clean ones first so attacked cells find their baseline stored."""
    ordered = sorted(cfgs, key=lambda c: baseline_of(c) is not None)
    return [audit(c, store, progress=progress) for c in ordered]
