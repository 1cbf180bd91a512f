"""Shared fixtures: small real datasets and tiny random models so the suite runs on 2 CPU cores."""

from __future__ import annotations

import numpy as np
import pytest

from lorasec.data.text import TextDataset, make_dataset


def toy_dataset(n: int, n_classes: int = 2, seed: int = 0) -> TextDataset:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    words = ["good", "bad", "plot", "actor", "scene", "boring", "great", "slow", "fun", "long"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in range(n)]
    return make_dataset([f"r{i}" for i in range(n)], texts, labels.tolist(), "toy")


@pytest.fixture
def toy() -> TextDataset:
    return toy_dataset(200)


@pytest.fixture
def tiny_cfg() -> dict:
    """A whole experiment that trains in about a second: tiny BERT on a slice of the real tweets data."""
    return {
        "seed": 3,
        "model": {"name": "tiny-bert", "hidden_size": 32, "layers": 2, "heads": 2},
        "data": {"name": "tweets", "max_train": 160, "max_test": 80},
        "method": {"kind": "lora", "rank": 4},
        "attack": {"kind": "prefix", "rate": 0.05, "trigger": "cf", "target": 1},
        "train": {"steps": 8, "batch_size": 8, "max_length": 48},
        "eval": {"batch_size": 32, "max_length": 48},
    }
