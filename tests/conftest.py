"""Shared fixtures: small real datasets and tiny random models so the suite runs on 2 CPU cores."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest

from lorasec.data.text import TextDataset, make_dataset
from lorasec.paths import cache_dir

# The user's cache as scripts/setup.sh filled it (offline models, pinned sources, extracted corpora). Tests read it
# through links and never write into it: every test gets its own cache directory.
SHARED_CACHE = cache_dir()
SHARED_PARTS = ("models", "tokenizers", "sources", "corpora", "data/vader")


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """A fresh LORASEC_CACHE per test, with links to the read-only entries of the shared cache, so the offline
    models load in a second but whatever a test builds, replaces or corrupts lands in its own directory."""
    root = tmp_path_factory.mktemp("cache")
    for part in SHARED_PARTS:
        src = SHARED_CACHE / part
        if src.is_dir():
            (root / part).mkdir(parents=True)
            for entry in src.iterdir():
                if not entry.name.startswith("."):
                    (root / part / entry.name).symlink_to(entry)
    monkeypatch.setenv("LORASEC_CACHE", str(root))
    return root


def network_opt_in() -> bool:
    """Tests that would reach a registry run only when asked: LORASEC_NETWORK_TESTS=1."""
    return os.environ.get("LORASEC_NETWORK_TESTS") == "1"


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


SWEEP_CELL = {  # a grid's base for sweep and fault tests: each cell trains in a fraction of a second
    "model": {"name": "tiny-bert", "hidden_size": 32, "layers": 2, "heads": 2},
    "data": {"name": "tweets", "max_train": 96, "max_test": 48},
    "method": {"kind": "lora", "rank": 4},
    "attack": {"kind": "label_flip", "rate": 0.1},
    "train": {"steps": 3, "batch_size": 8, "max_length": 32},
    "eval": {"batch_size": 48, "max_length": 32},
}

TINY_CFG = {  # a whole experiment that trains in about a second: tiny BERT on a slice of the real tweets data
    "seed": 3,
    "model": {"name": "tiny-bert", "hidden_size": 32, "layers": 2, "heads": 2},
    "data": {"name": "tweets", "max_train": 160, "max_test": 80},
    "method": {"kind": "lora", "rank": 4},
    "attack": {"kind": "prefix", "rate": 0.05, "trigger": "cf", "target": 1},
    "train": {"steps": 8, "batch_size": 8, "max_length": 48},
    "eval": {"batch_size": 32, "max_length": 48},
}


@pytest.fixture
def tiny_cfg() -> dict:
    """TINY_CFG, a fresh copy per test."""
    return copy.deepcopy(TINY_CFG)
