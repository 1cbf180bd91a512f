"""Typed stored records: the one place a result's shape is written down (pydantic), for every task.

A pipeline builds its task's record and dumps it; the engine adds the envelope every stored result has
(`Envelope`: key, label, config, stage seeds, environment, timings); readers (tables, baselines, reports) parse a
stored row with `Task.record.parse(row)` and read attributes instead of walking dicts. Parsing validates, so a
row of another shape fails loudly at the reader instead of giving a wrong number. Imports no torch.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Shape(BaseModel):
    """A closed record part: an unknown key is an error (a writer and its readers agree on every field)."""

    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    """A record part whose keys are data (metric names, per-stage timings), kept as written."""

    model_config = ConfigDict(extra="allow")


class TrainLog(Shape):
    steps: int
    seconds: float
    lr: float
    truncated_rows: int
    tokens_seen: int
    padded_tokens: int
    losses: list[float]
    lrs: list[float]
    dp: dict[str, Any] | None = None  # method.dp: accountant's epsilon, noise, clip, sample rate (lorasec.train)


class Envelope(Shape):
    """What the engine adds to every task's record."""

    key: str
    label: str
    config: dict[str, Any]
    seeds: dict[str, int]
    timings: dict[str, float]
    environment: dict[str, Any]

    @classmethod
    def parse(cls, row: dict) -> Any:
        """The typed view of a stored row (without the engine's run-time `cached` flag)."""
        return cls.model_validate({k: v for k, v in row.items() if k != "cached"})

    @property
    def seed(self) -> int:
        return int(self.config["seed"])
