"""The analyses registry and what its entries are (see lorasec.analyses)."""


from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field

from lorasec.config import Frozen
from lorasec.registry import Registry


@dataclass(frozen=True)
class Trained:
    """What an analysis reads: the trained model (peft-wrapped for LoRA), its tokenizer, the method's config and the
    names of the parameters that trained, the directory its files go to (None: write nothing) and the training
    log."""

    model: Any
    tokenizer: Any
    method: Any  # MethodConfig
    trainable: tuple[str, ...]
    artifacts: Path | None = None
    train: dict | None = None  # the training log (steps, losses, lrs, ...)


@dataclass(frozen=True)
class Analysis:
    config: type[Frozen]
    run: Callable[[Trained, Any], dict]  # (trained model, the analysis' config) -> JSON-safe dict


ANALYSES: Registry[Analysis] = Registry("analysis")


def analysis_union() -> Any:
    """`Annotated[MDelta | AdapterExport | ..., Field(discriminator="kind")]` over the registered analyses."""
    members = tuple(ANALYSES.get(n).config for n in ANALYSES.names())
    return Annotated[Union[members], Field(discriminator="kind")]  # noqa: UP007  (a runtime tuple of members)


def run_analyses(trained: Trained, cfgs: tuple) -> dict[str, dict]:
    """Every configured analysis on the trained model, by kind, in the order configured."""
    return {c.kind: ANALYSES.get(c.kind).run(trained, c) for c in cfgs}
