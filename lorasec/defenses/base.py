"""The defenses registry and what its entries are (see lorasec.defenses)."""


from __future__ import annotations

from collections.abc import Callable, Sequence
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

    @classmethod
    def without(cls, removed: list[np.ndarray], n: int, scores: np.ndarray) -> Kept:
        """Every one of `n` rows but the `removed` ones (a list of position arrays, one per class, say)."""
        drop = np.concatenate(removed) if removed else np.zeros(0, dtype=np.int64)
        return cls(np.setdiff1d(np.arange(n), drop), scores)


@dataclass(frozen=True)
class Rejected:
    """What an input filter decided for each input: a score (higher = more suspect), whether it is rejected, and
    for a filter that rewrites inputs instead (ONION), the rewritten texts the model is asked about."""

    scores: np.ndarray
    rejected: np.ndarray  # bool
    texts: tuple[str, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # what the filter chose (a threshold), stored with the cell


@dataclass(frozen=True)
class Context:
    """What a defense may read besides its own config. Defenses import no model or data code (the layers keep
    them apart): the pipeline hands them what they need as plain callables.

    - `val`: the clean validation split (thresholds are chosen on it).
    - `predict(texts) -> (n, k) probabilities`: the trained model (at evaluation only).
    - `represent(dataset, which) -> (n, d) features`: the [CLS] vector the classification head reads, of the base
      model (`which="base"`) or of a model trained on the poisoned set (`which="poisoned"`); before training.
    - `language_model() -> (model, tokenizer)`: the scoring causal LM (ONION), loaded on first call.
    - `progress`: whether to show progress bars; `memo`: a dict shared by the calls of one cell.
    """

    val: Any = None  # TextDataset
    model: Any = None
    tokenizer: Any = None
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    predict: Callable[[Sequence[str]], np.ndarray] | None = None
    represent: Callable[[Any, str], np.ndarray] | None = None
    language_model: Callable[[], tuple[Any, Any]] | None = None
    progress: bool = False
    memo: dict[str, Any] = field(default_factory=dict)  # what a defense computes once per cell (a threshold)

    def need(self, name: str, field_: str) -> Any:
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"{field_}: this defense needs {name!r}, which the pipeline did not provide")
        return value


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
