"""Configs: closed, defaults hash alike, model registry matches its union, errors in one line."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from lorasec.config import ModelConfig
from lorasec.errors import InputError
from lorasec.grid import expand
from lorasec.models.classifier import MODELS
from lorasec.store import config_key
from lorasec.tasks import load_config, parse_config
from lorasec.tasks.classification import ClassificationConfig as ExperimentConfig


def test_model_registry_matches_config_union():
    mapping = TypeAdapter(ModelConfig).json_schema()["discriminator"]["mapping"]
    assert set(mapping) == set(MODELS.names())


def test_stated_default_and_omitted_default_hash_alike():
    a = parse_config({"method": {"kind": "lora"}})
    b = parse_config({"method": {"kind": "lora", "rank": 8, "alpha": 16.0}, "seed": 1})
    assert config_key(a) == config_key(b)
    assert config_key(a) != config_key(parse_config({"method": {"kind": "lora", "rank": 16}}))


def test_yaml_scalars_are_parsed_leniently(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: {lr: 3e-5, steps: 10}\nmethod: {kind: lora, init_scale: 0.333}\n")
    cfg = load_config(p)
    assert cfg.lr() == pytest.approx(3e-5) and cfg.method.init_scale == pytest.approx(0.333)


@pytest.mark.parametrize("scale", [2, 1.5, 1, 0.667, 0.333, 0.1, 0.001, 0.0001])
def test_paper_init_sweep_values_are_expressible(scale):
    assert parse_config({"method": {"kind": "lora", "rank": 8, "init_scale": scale}}).method.init_scale == scale


def test_configs_are_frozen():
    cfg = ExperimentConfig()
    with pytest.raises(ValidationError):
        cfg.seed = 3  # type: ignore[misc]


def test_steps_and_epochs_are_exclusive():
    with pytest.raises(InputError, match="set exactly one of steps and epochs"):
        parse_config({"train": {"steps": 10, "epochs": 1}})


def test_grid_expands_in_order():
    cells = expand({"base": {"seed": 2}, "axes": {"method": [{"kind": "full"}, {"kind": "head_only"}],
                                                  "attack": [{"kind": "none"}, {"kind": "label_flip", "rate": 0.1}]}})
    assert [c.label() for c in cells] == ["full / none", "full / label_flip(0.1)", "head_only / none",
                                          "head_only / label_flip(0.1)"]
    with pytest.raises(InputError, match="axes.seed: must be a non-empty list of values or a count"):
        expand({"axes": {"seed": []}})


def test_shipped_demo_config_is_valid():
    from lorasec.cli import DEMO_CONFIG
    from lorasec.grid import load_grid

    cells = load_grid(DEMO_CONFIG)
    assert len(cells) == 21 and {c.model.name for c in cells} == {"minilm"}
    seeds = {k: sorted({c.seed for c in cells if c.method.kind == k}) for k in ("full", "lora", "head_only")}
    assert seeds == {"full": [1, 2, 3], "lora": [1, 2, 3], "head_only": [1]}  # evidence over seeds, not one


def test_every_shipped_config_validates():
    from pathlib import Path

    from lorasec.config import load_yaml
    from lorasec.grid import expand, load_grid

    for path in sorted((Path(__file__).parent.parent / "configs").glob("**/*.yaml")):
        raw = load_yaml(path)
        if "tuned" in raw:  # its lrs come from a store's validation choice (tests/test_lr_choice.py): the rest here
            cells = expand({k: v for k, v in raw.items() if k != "tuned"}, path.name)
        else:
            cells = load_grid(path) if "axes" in raw or "zip" in raw else [load_config(path)]
        sizes = [v if k == "seed" and isinstance(v, int) else len(v) for k, v in (raw.get("axes") or {}).items()]
        sizes += [len(members) for members in (raw.get("zip") or {}).values()]
        expected = int(np.prod(sizes)) if "axes" in raw or "zip" in raw else 1
        assert len(cells) == expected, path
