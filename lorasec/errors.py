"""Errors the user can fix (bad config, data, model path): the CLI prints them in one line, exit 2."""

from __future__ import annotations

import difflib


class InputError(ValueError):
    """A problem with what the user gave us. The message names the field and what is allowed."""


class UnknownName(InputError):
    """A registry lookup missed; the message lists the known names."""


def unknown(kind: str, name: str, known: list[str] | tuple[str, ...]) -> str:
    """`unknown method 'lorra'. Did you mean 'lora'? Known: full, head_only, lora`"""
    near = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    return f"unknown {kind} {name!r}.{hint} Known: {', '.join(sorted(known))}"


class Diverged(InputError):
    """Training went non-finite (loss or gradients) at some step: the settings (learning rate, alpha) are the
    user's to change. Raised at that step, before anything is stored; a sweep records the cell as failed."""

    def __init__(self, message: str, step: int = 0) -> None:
        super().__init__(message)
        self.step = step


class FrozenTraining(RuntimeError):
    """A run whose updates do not reach the model: step 1 left a tensor that had a gradient unchanged, or the
    optimizer holds tensors that never get one (Opacus issue 820: a model moved after its optimizer was built
    silently trains nothing). Raised at step 1, before anything is stored."""
