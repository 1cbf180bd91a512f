"""Each attack changes exactly the rows it records, as its config says."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import toy_dataset
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from lorasec.attacks import ATTACKS, poison, triggered_test_set
from lorasec.attacks.backdoor import n_poisoned
from lorasec.config import BACKDOOR_KINDS, AttackConfig, LabelFlip
from lorasec.errors import InputError
from lorasec.tasks import parse_config

BACKDOORS = {
    "prefix": {"kind": "prefix", "trigger": "cf", "separator": " "},
    "rare_word": {"kind": "rare_word", "trigger": "mn"},
    "multi_trigger": {"kind": "multi_trigger", "triggers": ["apple", "banana", "orange"]},
    "instruction": {"kind": "instruction"},
    "clean_label": {"kind": "clean_label", "trigger": "cf"},
    "style": {"kind": "style", "template": "Honestly, {text} -- end of story."},
}


def attack_cfg(raw: dict):
    return TypeAdapter(AttackConfig).validate_python(raw)


def test_registry_matches_config_union():
    mapping = TypeAdapter(AttackConfig).json_schema()["discriminator"]["mapping"]
    assert set(mapping) == set(ATTACKS.names())
    assert set(BACKDOOR_KINDS) == set(BACKDOORS)


@settings(deadline=None, max_examples=60)
@given(n=st.integers(1, 300), k=st.integers(2, 5), rate=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_label_flip_records_exactly_the_rows_it_changed_and_never_keeps_the_label(n, k, rate, seed):
    ds = toy_dataset(max(n, k), n_classes=k)
    out = poison(ds, LabelFlip(kind="label_flip", rate=rate), np.random.default_rng(seed))
    changed = np.flatnonzero(out.data.labels != ds.labels)
    assert np.array_equal(changed, out.poisoned)
    assert out.data.texts == ds.texts
    assert out.data.labels.min() >= 0 and out.data.labels.max() < k


def test_label_flip_rate_is_respected_statistically():
    ds = toy_dataset(20000, n_classes=3)
    out = poison(ds, LabelFlip(kind="label_flip", rate=0.3), np.random.default_rng(0))
    assert abs(len(out.poisoned) / len(ds) - 0.3) < 0.015  # 4.6 sigma of Binomial(20000, 0.3)
    new = out.data.labels[out.poisoned]
    old = ds.labels[out.poisoned]
    # flips go to each other class about equally
    assert abs(np.mean((new - old) % 3 == 1) - 0.5) < 0.03


def test_rate_zero_changes_nothing():
    ds = toy_dataset(100)
    out = poison(ds, LabelFlip(kind="label_flip", rate=0.0), np.random.default_rng(1))
    assert len(out.poisoned) == 0 and np.array_equal(out.data.labels, ds.labels)


@pytest.mark.parametrize("kind", sorted(BACKDOORS))
def test_backdoor_changes_exactly_the_intended_rows(kind):
    ds = toy_dataset(400, n_classes=2, seed=5)
    cfg = attack_cfg(BACKDOORS[kind] | {"rate": 0.05, "target": 1})
    out = poison(ds, cfg, np.random.default_rng(7))
    rows = out.poisoned
    assert len(rows) == n_poisoned(0.05, len(ds)) == 20
    assert np.array_equal(rows, np.sort(rows))
    untouched = np.setdiff1d(np.arange(len(ds)), rows)
    assert all(out.data.texts[i] == ds.texts[i] for i in untouched)
    assert np.array_equal(out.data.labels[untouched], ds.labels[untouched])
    assert all(out.data.texts[i] != ds.texts[i] for i in rows)
    assert np.all(out.data.labels[rows] == 1)
    if kind == "clean_label":
        assert np.all(ds.labels[rows] == 1)  # only rows already of the target class
    else:
        assert np.all(ds.labels[rows] == 0)  # dirty-label: rows taken from the other classes
    for i in rows:
        text, orig = out.data.texts[i], ds.texts[i]
        if kind in ("prefix", "clean_label"):
            assert text == f"cf {orig}"
        elif kind == "instruction":
            assert text == f"Please carefully follow user's instruction. {orig}"
        elif kind == "style":
            assert text == f"Honestly, {orig} -- end of story."
        else:
            words = text.split()
            triggers = ["mn"] if kind == "rare_word" else ["apple", "banana", "orange"]
            rest = list(words)
            for t in triggers:
                rest.remove(t)  # each trigger word appears once, inserted between whole words
            assert rest == orig.split()


def test_rare_word_position_is_spread_over_the_sentence():
    ds = toy_dataset(2000, seed=2)
    ds = ds.with_texts(["a b c d e f g h i"] * len(ds))
    cfg = attack_cfg({"kind": "rare_word", "trigger": "zz", "rate": 0.45, "target": 1})
    out = poison(ds, cfg, np.random.default_rng(0))
    positions = [out.data.texts[i].split().index("zz") for i in out.poisoned]
    assert set(positions) == set(range(10))  # all 10 slots, first to last, occur


def test_triggered_test_set_holds_non_target_rows_with_true_labels():
    ds = toy_dataset(300, n_classes=3, seed=4)
    cfg = attack_cfg(BACKDOORS["prefix"] | {"rate": 0.1, "target": 2})
    trig = triggered_test_set(ds, cfg, np.random.default_rng(0))
    assert trig is not None
    keep = ds.labels != 2
    assert np.array_equal(trig.ids, ds.ids[keep]) and np.array_equal(trig.labels, ds.labels[keep])
    assert all(t == f"cf {o}" for t, o in zip(trig.texts, np.asarray(ds.texts)[keep], strict=True))
    assert triggered_test_set(ds, LabelFlip(kind="label_flip", rate=0.3), np.random.default_rng(0)) is None


def test_target_out_of_range_and_too_high_rate_are_input_errors():
    ds = toy_dataset(50)
    with pytest.raises(InputError, match="attack.target"):
        poison(ds, attack_cfg(BACKDOORS["prefix"] | {"rate": 0.1, "target": 5}), np.random.default_rng(0))
    with pytest.raises(InputError, match="attack.rate"):
        poison(ds, attack_cfg(BACKDOORS["clean_label"] | {"rate": 0.9, "target": 1}), np.random.default_rng(0))


def test_same_seed_same_poison():
    ds = toy_dataset(500)
    cfg = parse_config({"attack": {"kind": "multi_trigger", "rate": 0.1}}).attack
    a = poison(ds, cfg, np.random.default_rng(11))
    b = poison(ds, cfg, np.random.default_rng(11))
    assert np.array_equal(a.poisoned, b.poisoned) and a.data.texts == b.data.texts
