"""What a task is: one entry of the task registry, and everything above the tasks reads only this.

A task says how to validate its config, run one cell, find the cell's clean baseline (if it has one) and
show its rows. `audit`, `grid`, `validate`, `show`, `models` and `datasets` never name a task; adding one
is a module that calls `TASKS.add(...)` and one import line in `lorasec/tasks/__init__.py`.

A task's pipeline is named as "module:function" and imported only when a cell runs, so validating a
config, listing names or printing a table never imports torch.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from lorasec.config import TaskConfig
from lorasec.registry import Registry


@dataclass
class TaskOutput:
    """What a task's pipeline returns. The engine adds the envelope (key, label, config, seeds, environment,
    total time) to `record` and stores it; `model` is the trained model, handed back only on request."""

    record: dict[str, Any]  # metrics, outputs, poisoned, data, model, train, timings (per stage)
    model: Any = None


@dataclass
class Section:
    """One section of `lorasec report` contributed by a task: markdown text, tables (name -> rows, also written as
    CSV) and matplotlib figures (name -> Figure, written as png and svg and embedded in the HTML page)."""

    title: str
    text: str = ""
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)


Pipeline = Callable[[Any, dict[str, int], bool], TaskOutput]  # (config, stage seeds, progress) -> output


def _no_baseline(cfg: TaskConfig) -> TaskConfig | None:
    return None


@dataclass(frozen=True)
class Task:
    name: str
    config: type[TaskConfig]  # a pydantic model with `task: Literal[name]`
    pipeline: str | Pipeline  # "module:function" (imported when a cell runs) or the function itself
    stages: tuple[str, ...]  # one seed per stage (lorasec.seeds.stage_seeds); append only
    table: Callable[[list[dict]], Table]  # the rows of stored results of this task, side by side
    check: Callable[[Any], str] = lambda cfg: cfg.label()  # validate beyond the schema (data, paths); says "ok: ..."
    baseline: Callable[[Any], TaskConfig | None] = _no_baseline  # the clean twin of an attacked cell
    # what an attacked result keeps of its baseline's stored record: (result, baseline record, config) -> dict
    baseline_summary: Callable[[dict, dict, Any], dict] | None = None
    listing: dict[str, str] = field(default_factory=dict)  # `lorasec models` -> "model": CLI noun -> config field
    # "module:function": (this task's stored rows) -> list[Section] for `lorasec report`; imported only by the report
    report: str | None = None
    # the typed stored row (a lorasec.tasks.records.Envelope subclass): the engine validates every record it builds
    # against it, and readers parse stored rows with `record.parse(row)`
    record: type | None = None

    def run(self, cfg: TaskConfig, seeds: dict[str, int], progress: bool, artifacts: Path | None = None
            ) -> TaskOutput:
        """Run the pipeline; `artifacts` (the cell's directory for files, when it runs against a store) goes to a
        pipeline that takes an `artifacts` argument, so one that writes no files takes just (config, seeds,
        progress)."""
        fn = self.pipeline
        if isinstance(fn, str):
            module, _, attr = fn.partition(":")
            fn = getattr(importlib.import_module(module), attr)
        if "artifacts" in inspect.signature(fn).parameters:
            return fn(cfg, seeds, progress, artifacts=artifacts)
        return fn(cfg, seeds, progress)


TASKS: Registry[Task] = Registry("task")
