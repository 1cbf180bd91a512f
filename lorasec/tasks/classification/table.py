"""Side-by-side table of classification results: clean accuracy, its change from the clean baseline, F1, ASR."""

from __future__ import annotations

from rich.table import Table

from lorasec.tasks.classification.record import ClassificationRecord


def _fmt(x: float | None, spec: str = ".3f", signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+{spec}}" if signed else f"{x:{spec}}"


def _asr(asr: float | None, floor: float | None) -> str:
    """ASR beside the clean baseline's rate of calling non-target rows the target (no trigger)."""
    if asr is None:
        return "-"
    return f"{asr:.3f}" + (f" ({floor:.3f})" if floor is not None else "")


def row(result: dict) -> dict:
    """Flat numbers for one result: what the table and the tests read."""
    r = ClassificationRecord.parse(result)
    clean, bd, base, cfg = r.metrics.clean, r.metrics.backdoor, r.baseline, r.config
    method = cfg["method"]["kind"] + (f" r={cfg['method']['rank']}" if cfg["method"]["kind"] == "lora" else "")
    attack = cfg["attack"]["kind"] + (f" {cfg['attack']['rate']:g}" if "rate" in cfg["attack"] else "")
    defense = cfg.get("defense", {}).get("kind", "none")
    return {
        "method": method,
        "attack": attack + ("" if defense == "none" else f" / {defense}"),
        "seed": r.seed,
        "cacc": clean.accuracy,
        "delta_cacc": r.delta_cacc,
        "f1": clean.f1 if clean.f1 is not None else clean.f1_macro,
        "asr": bd.asr if bd else None,
        "base_to_target": base.clean_to_target if base else None,
        "triggered_accuracy": bd.triggered_accuracy if bd else None,
        "n_poisoned": len(r.poisoned.ids),
        "trainable_params": r.model.trainable_params,  # type: ignore[attr-defined]
        "seconds": r.timings["total_s"],
        "lr": r.train.lr,
    }


def comparison_table(results: list[dict], title: str = "lorasec: robustness by fine-tuning method") -> Table:
    t = Table(title=title)
    for col in ("method", "attack", "seed", "CACC", "ΔCACC vs clean", "F1", "ASR (clean model)", "trig. acc",
                "poisoned", "trainable", "lr", "time s"):
        t.add_column(col, justify="left" if col in ("method", "attack") else "right")
    for r in sorted((row(x) for x in results), key=lambda r: (r["attack"], r["method"], r["seed"])):
        t.add_row(r["method"], r["attack"], str(r["seed"]), _fmt(r["cacc"]), _fmt(r["delta_cacc"], signed=True),
                  _fmt(r["f1"]),
                  _asr(r["asr"], r["base_to_target"]), _fmt(r["triggered_accuracy"]), str(r["n_poisoned"]),
                  f"{r['trainable_params']:,}", f"{r['lr']:g}", f"{r['seconds']:.0f}")
    return t
