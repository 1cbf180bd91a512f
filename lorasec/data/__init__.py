"""Dataset registry: name -> loader returning a validated TextDataset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lorasec.config import DataConfig, LocalData, ShippedData
from lorasec.data.sources import VADER_FILES, bbc_news, vader_snippets
from lorasec.data.text import Splits, TextDataset, make_dataset, read_utf8, split_dataset
from lorasec.errors import InputError
from lorasec.registry import Registry

DATASETS: Registry = Registry("dataset")

def _vader(cfg: ShippedData) -> TextDataset:
    ids, texts, scores = vader_snippets(cfg.name)
    return make_dataset(ids, texts, [int(s > 0) for s in scores], cfg.name, ("negative", "positive"))


for _name in VADER_FILES:
    DATASETS.register(_name)(_vader)


@DATASETS.register("bbc-news")
def _bbc(cfg: ShippedData) -> TextDataset:
    ids, texts, labels, names = bbc_news()
    return make_dataset(ids, texts, labels, cfg.name, names)


def _columns(rows: list[dict], cfg: LocalData) -> TextDataset:
    if not rows:
        raise InputError("data.path: the dataset is empty")
    for col, field in ((cfg.text_column, "text_column"), (cfg.label_column, "label_column")):
        if col not in rows[0]:
            raise InputError(f"data.{field}: column {col!r} not found; columns are {', '.join(map(str, rows[0]))}")
    ids = [str(r.get("id", i)) for i, r in enumerate(rows)]
    labels = []
    for i, r in zip(ids, rows, strict=True):
        try:
            labels.append(int(str(r[cfg.label_column]).strip()))
        except ValueError:
            raise InputError(
                f"data.label_column: row {i!r} has label {r[cfg.label_column]!r}; labels must be integers 0..k-1"
            ) from None
    return make_dataset(ids, [r[cfg.text_column] for r in rows], labels, "data.path")


@DATASETS.register("csv")
def _csv(cfg: LocalData) -> TextDataset:
    text = read_utf8(Path(cfg.path).expanduser(), "data.path")
    return _columns(list(csv.DictReader(text.splitlines())), cfg)


@DATASETS.register("jsonl")
def _jsonl(cfg: LocalData) -> TextDataset:
    text = read_utf8(Path(cfg.path).expanduser(), "data.path")
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise InputError(f"data.path: line {n} of {Path(cfg.path).name} is not valid JSON") from None
    return _columns(rows, cfg)


def load_dataset(cfg: DataConfig) -> TextDataset:
    """The whole dataset named by `cfg`, validated."""
    return DATASETS.get(cfg.name)(cfg)


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    """Train / validation / test splits of the configured dataset, stratified and fixed by seed."""
    return split_dataset(load_dataset(cfg), cfg.val_fraction, cfg.test_fraction, seed, cfg.max_train, cfg.max_test)


__all__ = ["DATASETS", "TextDataset", "Splits", "load_dataset", "load_splits"]
