"""The task registry and the one config schema: a discriminated union of every task's config on `task`.

Importing this package registers the shipped tasks (classification, memorization, theory); it imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from lorasec.config import TaskConfig, load_yaml, one_line
from lorasec.errors import InputError
from lorasec.registry import Registry
from lorasec.tasks import classification, memorization, theory  # noqa: F401  (register)
from lorasec.tasks.base import TASKS, Task, TaskOutput

SHIPPED = tuple(TASKS.names())  # registered by importing this package; others are registered at run time
DEFAULT_TASK = "classification"  # a config without `task:` is a classification cell


def config_union() -> Any:
    """`Annotated[ClassificationConfig | MemorizationConfig | ..., Field(discriminator="task")]`, over the
    registry as it is now (a task registered later joins it)."""
    members = tuple(TASKS.get(n).config for n in TASKS.names())
    return Annotated[Union[members], Field(discriminator="task")]  # noqa: UP007  (a runtime tuple of members)


_ADAPTERS: dict[tuple[str, ...], TypeAdapter] = {}


def _adapter() -> TypeAdapter:
    names = tuple(TASKS.names())
    if names not in _ADAPTERS:
        _ADAPTERS[names] = TypeAdapter(config_union()) if len(names) > 1 else TypeAdapter(TASKS.get(names[0]).config)
    return _ADAPTERS[names]


def parse_config(raw: object, source: str = "config") -> TaskConfig:
    """Validate a mapping into its task's config (`task:` picks the task; classification when absent).

    Any problem is an InputError in one line naming the field.
    """
    if not isinstance(raw, dict):
        raise InputError(f"{source}: expected a mapping of fields, got {type(raw).__name__}")
    raw = {"task": DEFAULT_TASK, **raw}
    if not isinstance(raw["task"], str) or raw["task"] not in TASKS:
        raise InputError(f"{source}: task: {TASKS.unknown(str(raw['task']))}")
    try:
        cfg = _adapter().validate_python(raw)
    except ValidationError as err:
        # the union puts the task's tag first in every location; the message names the user's fields
        tagged = len(TASKS.names()) > 1
        raise InputError(f"{source}: {one_line(err, TASKS.get(raw['task']).config, skip=int(tagged))}") from None
    if problem := unknown_entry(cfg):
        raise InputError(f"{source}: {problem}")
    return cfg


def _registries() -> dict[str, Registry]:
    from lorasec.optimizers import OPTIMIZERS  # torch-free: builders import torch when called

    return {"optimizer": OPTIMIZERS}


def unknown_entry(cfg: BaseModel, prefix: str = "") -> str | None:
    """`train.optimizer: unknown optimizer 'x'. Known: ...` for the first field marked
    `json_schema_extra={"registry": kind}` whose value is not an entry of that registry; None when all are."""
    for name, f in type(cfg).model_fields.items():
        value = getattr(cfg, name)
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if "registry" in extra:
            reg = _registries()[extra["registry"]]
            if value not in reg:
                return f"{prefix}{name}: {reg.unknown(str(value))}"
        elif isinstance(value, BaseModel) and (problem := unknown_entry(value, f"{prefix}{name}.")):
            return problem
    return None


def load_config(path: Path) -> TaskConfig:
    """Load and validate one experiment YAML file."""
    return parse_config(load_yaml(path), source=Path(path).name)


def task_of(cfg: TaskConfig) -> Task:
    return TASKS.get(cfg.task)  # type: ignore[attr-defined]


__all__ = ["SHIPPED", "TASKS", "Task", "TaskOutput", "config_union", "load_config", "parse_config", "task_of"]
