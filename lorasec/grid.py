"""Grids as data: a base experiment, axes and zipped groups, expanded to the product of their values.

    base: {method: {kind: lora}, attack: {kind: label_flip}}
    axes:
      attack.rate: [0.1, 0.3]         # a dotted field: one value per cell
      method.rank: [4, 8, 16]
      seed: 5                         # shorthand for seeds 1..5
    zip:                              # groups whose fields move together: one member per cell
      per_method_lr:
        - {method.kind: full, train.lr: 3.0e-6}
        - {method.kind: lora, train.lr: 3.0e-5}

Cells are the product of every axis and every zip group, in the order written (the last varies fastest).
A value sets its field inside the base (`method.rank` keeps the rest of `method`); a mapping value replaces
the field whole. Shallower fields are set first, so `method: {...}` and `method.rank` compose. Every cell is
validated before anything runs: a bad axis is one line naming it, and nothing is written.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

from lorasec.config import TaskConfig, load_yaml
from lorasec.errors import InputError
from lorasec.tasks import parse_config

Assignment = dict[str, Any]  # dotted field -> value
GRID_KEYS = {"base", "axes", "zip", "tuned"}


def _set(raw: dict, path: str, value: Any, where: str) -> None:
    *parents, leaf = path.split(".")
    node = raw
    for i, part in enumerate(parents):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise InputError(f"{where}: {'.'.join(parents[:i + 1])} is {child!r}, not a mapping, so {path} "
                             f"cannot be set")
        node = child
    node[leaf] = copy.deepcopy(value)


def _axis(name: str, values: Any, source: str) -> list[Assignment]:
    where = f"{source}: axes.{name}"
    if not name or any(not part for part in name.split(".")):
        raise InputError(f"{where}: a field is a dotted name like method.rank")
    if name == "seed" and isinstance(values, int) and not isinstance(values, bool):
        if values < 1:
            raise InputError(f"{where}: a count of seeds must be >= 1 (seed: 5 means seeds 1..5), got {values}")
        values = list(range(1, values + 1))
    if not isinstance(values, list) or not values:
        hint = " or a count (seed: 5)" if name == "seed" else ""
        raise InputError(f"{where}: must be a non-empty list of values{hint}, got {values!r}")
    return [{name: v} for v in values]


def _zip(name: str, members: Any, source: str) -> list[Assignment]:
    where = f"{source}: zip.{name}"
    if not isinstance(members, list) or not members or not all(isinstance(m, dict) and m for m in members):
        raise InputError(f"{where}: must be a non-empty list of mappings (field: value), one per cell")
    fields = set(members[0])
    for i, member in enumerate(members[1:], start=2):
        if set(member) != fields:
            raise InputError(f"{where}: member {i} sets {sorted(member)} but member 1 sets {sorted(fields)}; "
                             f"every member of a zip group sets the same fields")
    for field in fields:
        if not isinstance(field, str) or any(not part for part in field.split(".")):
            raise InputError(f"{where}: {field!r} is not a dotted field name like train.lr")
    return [dict(m) for m in members]


def assignments(spec: object, source: str = "grid") -> tuple[dict, list[Assignment]]:
    """The base and one assignment (dotted field -> value) per cell, without validating the cells."""
    if not isinstance(spec, dict) or set(spec) - GRID_KEYS:
        extra = sorted(set(spec) - GRID_KEYS) if isinstance(spec, dict) else None
        raise InputError(f"{source}: a grid is a mapping with 'base' (an experiment), 'axes' (field: [values]), "
                         f"'zip' (group: [{{field: value}}, ...]) and optionally 'tuned' ({{store: PATH}})"
                         + (f"; unknown key(s) {extra}" if extra else ""))
    base, axes, zips = spec.get("base") or {}, spec.get("axes") or {}, spec.get("zip") or {}
    for name, part in (("base", base), ("axes", axes), ("zip", zips)):
        if not isinstance(part, dict):
            raise InputError(f"{source}: {name} must be a mapping, got {type(part).__name__}")
    dims = [_axis(str(n), v, source) for n, v in axes.items()] + [_zip(str(n), m, source) for n, m in zips.items()]
    fields = [f for d in dims for f in d[0]]
    if dup := sorted({f for f in fields if fields.count(f) > 1}):
        raise InputError(f"{source}: {', '.join(dup)} set by more than one axis or zip group")
    return base, [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*dims)]


def _describe(assignment: Assignment) -> str:
    return ", ".join(f"{k}={v}" for k, v in assignment.items()) or "base"


def expand(spec: object, source: str = "grid") -> list[TaskConfig]:
    """Configs of every cell, each validated (an error names the cell and the field)."""
    base, cells = assignments(spec, source)
    tuned = _tuned(spec.get("tuned"), source) if isinstance(spec, dict) and "tuned" in spec else None
    configs = []
    for assignment in cells:
        raw = copy.deepcopy(base)
        where = f"{source}: cell ({_describe(assignment)})"
        for field in sorted(assignment, key=lambda f: f.count(".")):
            _set(raw, field, assignment[field], where)
        cfg = parse_config(raw, where)
        if tuned is not None:
            if "lr" in (raw.get("train") or {}):
                raise InputError(f"{where}: train.lr is set, but the grid takes it from 'tuned' (its store's choice "
                                 "on validation): set one of them")
            _set(raw, "train.lr", tuned.lr_for(cfg, where), where)
            cfg = parse_config(raw, where)
        configs.append(cfg)
    return configs


class _Tuned:
    """The tuned regime's learning rates (issue 31, part 2), read from a store holding the lr grid's clean cells:
    each cell takes the lr chosen on the clean validation split for its clean twin's setting (the same config
    with no attack, no defense and no analyses, less the seed and the lr), so attacked cells train with the
    recipe whose lr validation picked. Test rows take no part (lorasec.tasks.classification.lr_choice)."""

    def __init__(self, store: Path, rows: list[dict]) -> None:
        from lorasec.tasks.classification.lr_choice import choose

        self.store = store
        self.choices = {_setting_key(c.setting): c for c in choose(rows)}

    def lr_for(self, cfg: TaskConfig, where: str) -> float:
        flat = _twin_fields(cfg)
        choice = self.choices.get(_setting_key(flat))
        if choice is None or choice.chosen is None:
            why = "no clean cells at two or more lrs" if choice is None else "no lr with enough seeds yet"
            near = min(self.choices.values(), key=lambda c: len(_differ(c.setting, flat)), default=None)
            hint = f"; the nearest choice differs in {', '.join(_differ(near.setting, flat)[:4])}" if near else ""
            raise InputError(f"{where}: tuned: {self.store} holds {why} for this cell's clean setting "
                             f"(data.name={flat.get('data.name')}, method.kind={flat.get('method.kind')}){hint}")
        return choice.chosen.lr


def _twin_fields(cfg: TaskConfig) -> dict[str, Any]:
    from lorasec.tasks.evidence import config_fields

    return config_fields(cfg.model_dump(mode="json"))


def _not_recipe(k: str) -> bool:
    """What a cell may differ in from the clean cell whose lr it takes: seed, lr, attack, defense, analyses."""
    return k in ("seed", "train.lr") or k.startswith(("attack.", "defense.", "analyses"))


def _setting_key(flat: dict[str, Any]) -> tuple:
    from lorasec.tasks.evidence import frozen

    return frozen(flat, drop=_not_recipe)


def _differ(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if not _not_recipe(k) and a.get(k) != b.get(k))


def _tuned(spec: object, source: str) -> _Tuned:
    from lorasec.store import check_store, open_store, results

    if not isinstance(spec, dict) or set(spec) != {"store"} or not isinstance(spec["store"], str):
        raise InputError(f"{source}: tuned must be {{store: PATH}}: the store holding the lr grid's clean cells")
    store = Path(spec["store"])
    if not store.is_file():
        raise InputError(f"{source}: tuned.store: {str(store)!r} does not exist (run the lr grid's clean cells "
                         "into it first)")
    check_store(store, write=False)
    con = open_store(store)
    try:
        rows = list(results(con, task="classification"))
    finally:
        con.close()
    return _Tuned(store, rows)


def is_grid(raw: object) -> bool:
    """A grid file has `axes` or `zip` (and usually `base`); an experiment file has none of them."""
    return isinstance(raw, dict) and any(k in raw for k in ("axes", "zip", "base"))


def load_grid(path: Path) -> list[TaskConfig]:
    return expand(load_yaml(path), Path(path).name)
