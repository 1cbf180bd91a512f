"""Shipped datasets load from their offline sources; splits are stratified, disjoint and fixed by seed."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import TypeAdapter

from lorasec.config import DataConfig, LocalData, ShippedData
from lorasec.data import DATASETS, load_dataset, load_splits
from lorasec.data.sources import VADER_FILES
from lorasec.errors import InputError


def test_registry_matches_config_union():
    mapping = TypeAdapter(DataConfig).json_schema()["discriminator"]["mapping"]
    assert set(mapping) == set(DATASETS.names())


def test_movie_reviews_is_the_full_rotten_tomatoes_file():
    ds = load_dataset(ShippedData(name="movie-reviews"))
    assert len(ds) == 10605 and ds.n_classes == 2
    assert ds.texts[0].startswith("The Rock is destined to be the 21st Century's new")
    assert ds.labels[0] == 1 and ds.labels[2] == 0  # scores 2.27 and -0.6
    assert 0.45 < ds.labels.mean() < 0.55


# rows and positive rows (score > 0) of each vaderSentiment ground-truth file, counted once by reading the files
VADER_COUNTS = {"movie-reviews": 10605, "amazon-reviews": 3708, "tweets": 4200, "nyt-editorials": 5190}


@pytest.mark.parametrize("name", sorted(VADER_FILES))
def test_vader_sources_load(name):
    ds = load_dataset(ShippedData(name=name))
    assert len(ds) == VADER_COUNTS[name] and set(np.unique(ds.labels)) == {0, 1}


def test_bbc_news_has_five_topics():
    ds = load_dataset(ShippedData(name="bbc-news"))
    assert len(ds) == 2225 and ds.n_classes == 5
    assert ds.label_names == ("business", "entertainment", "politics", "sports", "tech")


def test_splits_are_stratified_disjoint_and_deterministic():
    cfg = ShippedData(name="tweets", val_fraction=0.1, test_fraction=0.2)
    a, b, c = load_splits(cfg, 1), load_splits(cfg, 1), load_splits(cfg, 2)
    assert np.array_equal(a.train.ids, b.train.ids) and np.array_equal(a.test.ids, b.test.ids)
    assert not np.array_equal(a.test.ids, c.test.ids)
    ids = [set(a.train.ids), set(a.val.ids), set(a.test.ids)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(map(len, ids)) == 4200
    full = load_dataset(cfg).labels.mean()
    for part in (a.train, a.val, a.test):
        assert abs(part.labels.mean() - full) < 0.01


def test_max_train_and_max_test_keep_class_balance():
    s = load_splits(ShippedData(name="movie-reviews", max_train=500, max_test=200), 3)
    assert len(s.train) == 500 and len(s.test) == 200
    assert abs(s.train.labels.mean() - 0.494) < 0.01


def test_local_csv_and_jsonl(tmp_path):
    (tmp_path / "d.csv").write_text("id,sentence,y\na,good film,1\nb,\"bad, slow\",0\nc,fine,1\nd,dull,0\n")
    ds = load_dataset(LocalData(name="csv", path=str(tmp_path / "d.csv"), text_column="sentence", label_column="y"))
    assert ds.ids.tolist() == ["a", "b", "c", "d"] and ds.texts[1] == "bad, slow" and ds.labels.tolist() == [1, 0, 1, 0]
    (tmp_path / "d.jsonl").write_text('{"text": "x y", "label": 0}\n{"text": "z", "label": 1}\n')
    ds = load_dataset(LocalData(name="jsonl", path=str(tmp_path / "d.jsonl")))
    assert ds.texts == ("x y", "z") and ds.n_classes == 2


@pytest.mark.parametrize("name,val,test,max_train,max_test", [
    ("movie-reviews", 0.1, 0.2, None, 1000), ("tweets", 0.0, 0.3, 500, None), ("bbc-news", 0.15, 0.25, None, None),
    ("amazon-reviews", 0.05, 0.1, 2000, 300),
])
def test_split_sizes_without_sklearn_match_the_split(name, val, test, max_train, max_test):
    from lorasec.data.text import split_dataset, split_sizes

    ds = load_dataset(ShippedData(name=name))
    splits = split_dataset(ds, val, test, seed=4, max_train=max_train, max_test=max_test)
    assert split_sizes(ds, val, test, max_train, max_test) == (len(splits.train), len(splits.val), len(splits.test))


def test_split_sizes_refuse_what_the_split_refuses():
    from lorasec.data.text import make_dataset, split_dataset, split_sizes

    one_of_a_class = make_dataset([f"r{i}" for i in range(9)], ["x"] * 9, [0] * 8 + [1], "toy")
    for fn in (lambda: split_sizes(one_of_a_class, 0.1, 0.2), lambda: split_dataset(one_of_a_class, 0.1, 0.2, 1)):
        with pytest.raises(InputError, match="cannot split 9 rows"):
            fn()
