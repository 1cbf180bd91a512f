"""name -> entry registries for tasks, models, datasets, methods, attacks and metrics (peft / lm-eval style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from lorasec.errors import UnknownName, unknown

F = TypeVar("F")


class Registry(Generic[F]):
    """name -> entry (a function, or a Task) for one kind: task, attack, method, metric, model, dataset."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._fns: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def add(fn: F) -> F:
            if name in self._fns:
                owner = getattr(self._fns[name], "__module__", type(self._fns[name]).__module__)
                raise ValueError(f"{self.kind} {name!r} already registered by {owner}")
            self._fns[name] = fn
            return fn

        return add

    def add(self, name: str, entry: F) -> F:
        """Register `entry` under `name`; a taken name is an error, not a silent replacement."""
        return self.register(name)(entry)

    def remove(self, name: str) -> None:
        """Forget `name` (for a test's own entry); unknown names are an error."""
        self.get(name)
        del self._fns[name]

    def names(self) -> list[str]:
        return sorted(self._fns)

    def __contains__(self, name: object) -> bool:
        return name in self._fns

    def unknown(self, name: str) -> str:
        return unknown(self.kind, name, self.names())

    def get(self, name: str) -> F:
        if name not in self._fns:
            raise UnknownName(self.unknown(name))
        return self._fns[name]
