"""The tuned regime's learning rate (issue 31, part 2): chosen per (dataset, method) on the clean **validation**
split, never on test rows.

Candidates are the clean cells (no attack, no defense) that differ only in `train.lr` and the seed; each lr's score
is its mean validation accuracy over seeds, and an lr is eligible only with at least MIN_SEEDS seeds. The choice is
the eligible lr with the highest score (a tie goes to the smaller lr). Reads `metrics.val` only: test metrics and
test outputs take no part (tests/test_lr_choice.py changes every test label and gets the same choice).

Reads stored result dicts only: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lorasec.tasks.evidence import MIN_SEEDS, config_fields, describe, frozen, stats, varying


@dataclass
class Candidate:
    lr: float
    seeds: list[int]
    val_accuracy: list[float]
    keys: list[str]

    @property
    def score(self) -> float:
        return sum(self.val_accuracy) / len(self.val_accuracy)

    @property
    def eligible(self) -> bool:
        return len(self.seeds) >= MIN_SEEDS


@dataclass
class Choice:
    setting: dict[str, Any]  # the flattened config shared by the candidates (without seed and train.lr)
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def chosen(self) -> Candidate | None:
        ok = [c for c in self.candidates if c.eligible]
        return max(ok, key=lambda c: (c.score, -c.lr)) if ok else None


def _clean(r: dict) -> bool:
    cfg = r["config"]
    return cfg.get("attack", {}).get("kind") == "none" and cfg.get("defense", {}).get("kind", "none") == "none"


def _val_accuracy(r: dict) -> float | None:
    val = (r.get("metrics") or {}).get("val")
    return None if not val else val.get("accuracy")


def choose(rows: list[dict]) -> list[Choice]:
    """One Choice per setting with at least two candidate learning rates among its clean, validated cells."""
    by: dict[tuple, Choice] = {}
    for r in rows:
        if r["config"].get("task") != "classification" or not _clean(r) or _val_accuracy(r) is None:
            continue
        flat = config_fields(r["config"])
        seed, lr = flat.pop("seed"), flat.pop("train.lr")
        choice = by.setdefault(frozen(flat), Choice(flat))
        cand = next((c for c in choice.candidates if c.lr == lr), None)
        if cand is None:
            cand = Candidate(lr, [], [], [])
            choice.candidates.append(cand)
        cand.seeds.append(seed)
        cand.val_accuracy.append(float(_val_accuracy(r)))  # type: ignore[arg-type]
        cand.keys.append(r["key"])
    out = [c for c in by.values() if len(c.candidates) >= 2]
    for c in out:
        c.candidates.sort(key=lambda x: x.lr)
    return out


def choice_rows(rows: list[dict]) -> list[dict[str, Any]]:
    """The table: per setting and candidate lr, its validation accuracy over seeds and whether it was chosen."""
    choices = choose(rows)
    fields = [f for f in varying([c.setting for c in choices]) if f not in ("data.name", "method.kind")]
    out = []
    for c in choices:
        best = c.chosen
        where = describe(c.setting, ["data.name", "method.kind", *fields]) or "all clean cells"
        for cand in c.candidates:
            s = stats(cand.val_accuracy)
            out.append({"setting": where, "lr": cand.lr, "n": s.n, "val accuracy mean": s.mean,
                        "val accuracy std": s.std,
                        "chosen": "chosen" if best is cand else ("" if cand.eligible else f"n<{MIN_SEEDS}"),
                        "seeds": cand.seeds, "cells": cand.keys})
    return out
