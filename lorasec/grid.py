"""Grids as data: a base experiment and axes whose values replace top-level fields, expanded in order."""

from __future__ import annotations

import itertools
from pathlib import Path

from lorasec.config import TaskConfig, load_yaml
from lorasec.errors import InputError
from lorasec.tasks import parse_config


def expand(spec: object, source: str = "grid") -> list[TaskConfig]:
    """Configs of every combination of the axes, each validated (errors name the cell's field)."""
    if not isinstance(spec, dict) or set(spec) - {"base", "axes"}:
        raise InputError(f"{source}: a grid is a mapping with 'base' (an experiment) and 'axes' (field: [values])")
    base = spec.get("base") or {}
    axes = spec.get("axes") or {}
    if not isinstance(base, dict) or not isinstance(axes, dict):
        raise InputError(f"{source}: 'base' must be a mapping and 'axes' a mapping of field -> list")
    for field, values in axes.items():
        if not isinstance(values, list) or not values:
            raise InputError(f"{source}: axes.{field} must be a non-empty list")
    names = list(axes)
    cells = []
    for combo in itertools.product(*(axes[n] for n in names)):
        raw = {**base, **dict(zip(names, combo, strict=True))}
        cells.append(parse_config(raw, source))
    return cells


def load_grid(path: Path) -> list[TaskConfig]:
    return expand(load_yaml(path), Path(path).name)
