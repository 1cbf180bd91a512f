"""Backdoor (BadNets-style) poisoning, paper 1 section 5.2, and its variants.

Every variant is one trigger function `(text, cfg, rng) -> text` plus a rule for which rows to poison:
dirty-label variants take rows whose label is not the target and relabel them; clean-label takes rows
already of the target class and leaves labels alone. The same trigger function builds the test-time
triggered set, so training and evaluation insert triggers identically.
"""

from __future__ import annotations

import numpy as np

from lorasec.attacks.base import ATTACKS, TRIGGERS, PoisonedDataset
from lorasec.config import (
    BackdoorConfig,
    CleanLabelBackdoor,
    InstructionBackdoor,
    MultiTriggerBackdoor,
    PrefixBackdoor,
    RareWordBackdoor,
    StyleBackdoor,
)
from lorasec.data.text import TextDataset
from lorasec.errors import InputError


def insert_word(text: str, word: str, rng: np.random.Generator) -> str:
    """`word` inserted between words at a uniformly random position (0 = before the first word)."""
    words = text.split()
    at = int(rng.integers(0, len(words) + 1))
    return " ".join([*words[:at], word, *words[at:]])


def _prefix(text: str, cfg: PrefixBackdoor, rng: np.random.Generator) -> str:
    return f"{cfg.trigger}{cfg.separator}{text}"


def _rare_word(text: str, cfg: RareWordBackdoor, rng: np.random.Generator) -> str:
    return insert_word(text, cfg.trigger, rng)


def _multi(text: str, cfg: MultiTriggerBackdoor, rng: np.random.Generator) -> str:
    for word in cfg.triggers:
        text = insert_word(text, word, rng)
    return text


def _instruction(text: str, cfg: InstructionBackdoor, rng: np.random.Generator) -> str:
    return f"{cfg.trigger} {text}"


def _clean_label(text: str, cfg: CleanLabelBackdoor, rng: np.random.Generator) -> str:
    return f"{cfg.trigger} {text}"


def _style(text: str, cfg: StyleBackdoor, rng: np.random.Generator) -> str:
    return cfg.template.replace("{text}", text)  # not str.format: row text may hold braces


def n_poisoned(rate: float, n_rows: int) -> int:
    """Rows to poison for a rate over the whole training set: round(rate * n), at least one."""
    return max(1, int(round(rate * n_rows)))


def backdoor(ds: TextDataset, cfg: BackdoorConfig, rng: np.random.Generator) -> PoisonedDataset:
    """Insert the trigger into `n_poisoned(rate, len(ds))` eligible rows; dirty-label rows get the target label."""
    clean_label = cfg.kind == "clean_label"
    eligible = np.flatnonzero(ds.labels == cfg.target) if clean_label else np.flatnonzero(ds.labels != cfg.target)
    n = n_poisoned(cfg.rate, len(ds))
    if n > len(eligible):
        which = "of" if clean_label else "not of"
        raise InputError(
            f"attack.rate: {cfg.rate} asks for {n} rows but only {len(eligible)} are {which} the target class"
        )
    rows = np.sort(rng.choice(eligible, size=n, replace=False))
    trigger = TRIGGERS[cfg.kind]
    texts = list(ds.texts)
    for i in rows:
        texts[i] = trigger(texts[i], cfg, rng)
    labels = ds.labels.copy()
    labels[rows] = cfg.target
    return PoisonedDataset(ds.with_texts(texts).with_labels(labels), rows, ds)


for _kind, _fn in {"prefix": _prefix, "rare_word": _rare_word, "multi_trigger": _multi,
                   "instruction": _instruction, "clean_label": _clean_label, "style": _style}.items():
    TRIGGERS[_kind] = _fn
    ATTACKS.register(_kind)(backdoor)
