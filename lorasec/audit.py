"""Store-aware execution: run a cell (or reuse it), attach its clean baseline, save atomically.

An attacked cell always carries the clean baseline of the same model, data, method and seed, so an
attack's effect is read as a difference. Nothing touches the store until every run has succeeded.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lorasec.config import ExperimentConfig, NoAttack
from lorasec.metrics.classification import to_target_rate
from lorasec.run import run
from lorasec.store import config_key, load, open_store, save


def baseline_of(cfg: ExperimentConfig) -> ExperimentConfig | None:
    """The same cell without the attack; None if the cell is already clean (or not a classification cell)."""
    if cfg.task != "classification" or isinstance(cfg.attack, NoAttack):
        return None
    return cfg.model_copy(update={"attack": NoAttack(kind="none")})


def execute(cfg: ExperimentConfig, progress: bool = True) -> dict:
    """Run one cell of either arm (no store): the classification or the memorization pipeline."""
    if cfg.task == "memorization":
        from lorasec.memorization.run import run_memorization  # late: loads the causal-LM stack

        return run_memorization(cfg, progress=progress)  # type: ignore[arg-type]
    return run(cfg, progress=progress)


def _stored(store: Path, key: str) -> dict | None:
    if not Path(store).exists():  # looking must not create the store
        return None
    con = open_store(store)
    try:
        return load(con, key)
    finally:
        con.close()


def audit(cfg: ExperimentConfig, store: Path, force: bool = False, progress: bool = True) -> dict:
    """Result of `cfg` from the store, or run it (and its baseline when missing) and save both."""
    key = config_key(cfg)
    if not force and (hit := _stored(store, key)) is not None:
        return hit | {"cached": True}
    result = execute(cfg, progress)
    fresh = [result]
    base_cfg = baseline_of(cfg)
    if base_cfg is not None:
        base = _stored(store, config_key(base_cfg))
        if base is None:
            base = run(base_cfg, progress=progress)
            fresh.insert(0, base)
        result["baseline"] = {"key": base["key"], "clean": base["metrics"]["clean"]}
        if "backdoor" in result["metrics"]:
            out = base["outputs"]["clean"]
            result["baseline"]["clean_to_target"] = to_target_rate(out["labels"], out["preds"], cfg.attack.target)
    con = open_store(store)
    try:
        for r in fresh:
            save(con, r, replace=force)
    finally:
        con.close()
    return result | {"cached": False}


def audit_all(cfgs: Iterable[ExperimentConfig], store: Path, progress: bool = True) -> list[dict]:
    """Audit cells in order, clean ones first so attacked cells find their baseline stored."""
    ordered = sorted(cfgs, key=lambda c: baseline_of(c) is not None)
    return [audit(c, store, progress=progress) for c in ordered]
