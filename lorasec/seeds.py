"""One seed per stage of a cell, derived from the cell's seed the same way for every task."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np


def stage_seeds(seed: int, names: tuple[str, ...]) -> dict[str, int]:
    """One independent seed per stage, so changing the attack leaves head init and batch order unchanged.

    Child i of a SeedSequence depends on i alone, so a task appends new stages at the end of `names`
    and the seeds of the earlier ones do not move.
    """
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {n: int(c.generate_state(1)[0]) for n, c in zip(names, children, strict=True)}


@contextlib.contextmanager
def torch_seeded(seed: int) -> Iterator[None]:
    """Seed torch's generators for the block only: what runs inside depends on `seed` alone, and the caller's
    generator state is as it was afterwards, so a cell never depends on the cells run before it."""
    import torch

    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
        torch.manual_seed(seed)
        yield
