"""The defenses registry and what its entries are (see lorasec.defenses)."""


from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Union

import numpy as np
from pydantic import Field

from lorasec.config import Frozen
from lorasec.registry import Registry


@dataclass(frozen=True)
class Kept:
    """What a training-set filter decided: positions of the rows kept (sorted) and a score per row (higher = more
    suspect; NaN where the defense scores nothing)."""

    rows: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class Rejected:
    """What an input filter decided for each input: a score (higher = more suspect) and whether it is rejected."""

    scores: np.ndarray
    rejected: np.ndarray  # bool


@dataclass(frozen=True)
class Context:
    """What a defense may read besides its own config: the clean validation split (for thresholds chosen on it),
    and at evaluation the trained model and its tokenizer."""

    val: Any = None  # TextDataset
    model: Any = None
    tokenizer: Any = None
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))


@dataclass(frozen=True)
class Defense:
    config: type[Frozen]
    # (poisoned training set, config, context) -> Kept
    train_filter: Callable[[Any, Any, Context], Kept] | None = None
    # (inputs, config, context) -> Rejected
    input_filter: Callable[[Any, Any, Context], Rejected] | None = None


DEFENSES: Registry[Defense] = Registry("defense")


def defense_union() -> Any:
    """`Annotated[NoDefense | KeywordFilter | ..., Field(discriminator="kind")]` over the registered defenses."""
    members = tuple(DEFENSES.get(n).config for n in DEFENSES.names())
    return Annotated[Union[members], Field(discriminator="kind")]  # noqa: UP007  (a runtime tuple of members)
