"""name -> function registries for models, datasets, methods, attacks and metrics (peft / lm-eval style)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from lorasec.errors import UnknownName

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """name -> function for one kind: attack, method, metric, model, dataset."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._fns: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def add(fn: F) -> F:
            if name in self._fns:
                raise ValueError(f"{self.kind} {name!r} already registered by {self._fns[name].__module__}")
            self._fns[name] = fn
            return fn

        return add

    def names(self) -> list[str]:
        return sorted(self._fns)

    def __contains__(self, name: object) -> bool:
        return name in self._fns

    def unknown(self, name: str) -> str:
        near = difflib.get_close_matches(name, self._fns, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        return f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.names())}"

    def get(self, name: str) -> F:
        if name not in self._fns:
            raise UnknownName(self.unknown(name))
        return self._fns[name]
