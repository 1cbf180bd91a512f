"""TextDataset: rows of (id, text, label) and the deterministic stratified split."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from lorasec.errors import InputError


def read_utf8(path: Path, field: str) -> str:
    """A local text file's contents; a missing file or non-UTF-8 bytes are InputErrors naming `field`."""
    if not path.is_file():
        raise InputError(f"{field}: {str(path)!r} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{field}: {path.name} is not UTF-8 text (bad byte at offset {err.start})") from None


@dataclass(frozen=True)
class TextDataset:
    """Rows of a classification dataset. `ids` are stable row ids from the source (kept through splits)."""

    ids: np.ndarray  # (n,) str
    texts: tuple[str, ...]
    labels: np.ndarray  # (n,) int64 in [0, n_classes)
    n_classes: int
    label_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.texts) == len(self.labels)):
            raise ValueError("ids, texts and labels differ in length")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, rows: np.ndarray) -> TextDataset:
        """The rows at positions `rows`, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return replace(self, ids=self.ids[rows], texts=tuple(self.texts[i] for i in rows), labels=self.labels[rows])

    def with_labels(self, labels: np.ndarray) -> TextDataset:
        return replace(self, labels=np.asarray(labels, dtype=np.int64))

    def with_texts(self, texts: list[str] | tuple[str, ...]) -> TextDataset:
        return replace(self, texts=tuple(texts))


def make_dataset(ids: list[str], texts: list[str], labels: list[int], source: str,
                 label_names: tuple[str, ...] = ()) -> TextDataset:
    """Validate raw rows (non-empty, UTF-8 text, labels 0..k-1) into a TextDataset."""
    if not texts:
        raise InputError(f"{source}: the dataset is empty")
    for i, t in zip(ids, texts, strict=True):
        if not isinstance(t, str) or not t.strip():
            raise InputError(f"{source}: row {i!r} has an empty or non-text value in the text column")
    try:
        arr = np.asarray([int(x) for x in labels], dtype=np.int64)
    except (TypeError, ValueError):
        raise InputError(f"{source}: labels must be integers 0..k-1") from None
    if arr.min() < 0:
        raise InputError(f"{source}: label {int(arr.min())} is out of range; labels must be integers 0..k-1")
    n_classes = max(int(arr.max()) + 1, len(label_names))
    if n_classes < 2:
        raise InputError(f"{source}: need at least 2 classes, found labels {sorted(set(arr.tolist()))}")
    missing = sorted(set(range(n_classes)) - set(arr.tolist()))
    if missing:
        raise InputError(f"{source}: labels must be 0..k-1 with every class present; missing {missing}")
    if len(set(ids)) != len(ids):
        raise InputError(f"{source}: row ids are not unique")
    return TextDataset(np.asarray(ids, dtype=str), tuple(texts), arr, n_classes, tuple(label_names))


@dataclass(frozen=True)
class Splits:
    train: TextDataset
    val: TextDataset
    test: TextDataset


def _stratified_take(ds: TextDataset, n: int | None, seed: int) -> TextDataset:
    from sklearn.model_selection import train_test_split  # late: `lorasec validate` must stay fast

    if n is None or n >= len(ds):
        return ds
    keep, _ = train_test_split(np.arange(len(ds)), train_size=n, stratify=ds.labels, random_state=seed)
    return ds.subset(np.sort(keep))


def split_dataset(ds: TextDataset, val_fraction: float, test_fraction: float, seed: int,
                  max_train: int | None = None, max_test: int | None = None) -> Splits:
    """Deterministic stratified train / validation / test split (scikit-learn), by seed."""
    from sklearn.model_selection import train_test_split  # late: `lorasec validate` must stay fast

    rows = np.arange(len(ds))
    try:
        rest, test = train_test_split(rows, test_size=test_fraction, stratify=ds.labels, random_state=seed)
        if val_fraction > 0:
            frac = val_fraction / (1 - test_fraction)
            train, val = train_test_split(rest, test_size=frac, stratify=ds.labels[rest], random_state=seed)
        else:
            train, val = rest, rest[:0]
    except ValueError as err:
        raise InputError(f"data: cannot split {len(ds)} rows into stratified train/val/test ({err})") from None
    return Splits(
        train=_stratified_take(ds.subset(np.sort(train)), max_train, seed),
        val=ds.subset(np.sort(val)),
        test=_stratified_take(ds.subset(np.sort(test)), max_test, seed),
    )


def _cut(n: int, counts: np.ndarray, test_fraction: float) -> tuple[int, int]:
    """(train, test) sizes of one stratified cut as scikit-learn's train_test_split makes them (ceil for the
    test part), raising where it raises."""
    n_test = math.ceil(test_fraction * n)
    n_train = n - n_test
    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"{n} rows leave an empty part")
    if counts.min() < 2:
        raise ValueError("The least populated class in y has only 1 member, which is too few.")
    if n_train < len(counts) or n_test < len(counts):
        raise ValueError(f"each part needs at least one row of each of the {len(counts)} classes")
    return n_train, n_test


def split_sizes(ds: TextDataset, val_fraction: float, test_fraction: float, max_train: int | None = None,
                max_test: int | None = None) -> tuple[int, int, int]:
    """(train, val, test) row counts `split_dataset` gives, computed without scikit-learn (for `validate`),
    with an InputError where the rows cannot be split. Tests hold it equal to `split_dataset`."""
    counts = np.bincount(ds.labels)
    try:
        n_rest, n_test = _cut(len(ds), counts, test_fraction)
        n_train, n_val = n_rest, 0
        if val_fraction > 0:
            # stratification keeps the rest's class mix close to the whole set's: scale the counts to it
            rest_counts = np.maximum(1, np.floor(counts * n_rest / len(ds))).astype(int)
            n_train, n_val = _cut(n_rest, rest_counts, val_fraction / (1 - test_fraction))
    except ValueError as err:
        raise InputError(f"data: cannot split {len(ds)} rows into stratified train/val/test ({err})") from None
    return min(n_train, max_train or n_train), n_val, min(n_test, max_test or n_test)
