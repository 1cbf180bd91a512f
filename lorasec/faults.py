"""Named fault points, so a test can kill a sweep at the exact moment that matters instead of at a random time.

    LORASEC_FAULT="in_save:2"          the process that passes `in_save` for the 2nd time SIGKILLs itself there
    LORASEC_FAULT="worker_done:1,claim_held:3"   several points at once
    LORASEC_FAULT_DIR=/some/dir        where passes are counted (required with LORASEC_FAULT)

Passes are counted across processes (a file per pass, created with O_EXCL), so "the 2nd cell any worker
finishes" means exactly one death however many workers run. Unset, `hit` costs one dictionary look-up.

The points:
- `claim_held`   the driver has claimed a cell and not yet handed it to a worker;
- `worker_done`  a worker has computed a cell's result and not yet returned it (the worker dies, not the driver);
- `result_received`  the driver holds a finished result and has not yet saved it;
- `in_save`      inside the store's transaction, after the row is inserted and before the commit.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

POINTS = ("claim_held", "worker_done", "result_received", "in_save")
ENV, DIR_ENV = "LORASEC_FAULT", "LORASEC_FAULT_DIR"


def armed() -> dict[str, int]:
    """The points set in the environment and the pass at which each fires."""
    spec = os.environ.get(ENV, "")
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        point, _, n = part.partition(":")
        if point not in POINTS or not n.isdigit() or int(n) < 1:
            raise ValueError(f"{ENV}: {part!r} is not POINT:N with N >= 1 and POINT one of {', '.join(POINTS)}")
        out[point] = int(n)
    return out


def _count(point: str) -> int:
    """Record one more pass of `point` (atomically, across processes); returns its number, from 1."""
    where = Path(os.environ[DIR_ENV])
    where.mkdir(parents=True, exist_ok=True)
    i = 1
    while True:
        try:
            os.close(os.open(where / f"{point}.{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return i
        except FileExistsError:
            i += 1


def hit(point: str) -> None:
    """Pass `point`; die by SIGKILL (no clean-up, no finally blocks) if this is the pass the environment names."""
    if ENV not in os.environ:
        return
    n = armed().get(point)
    if n is not None and _count(point) == n:
        os.kill(os.getpid(), signal.SIGKILL)
