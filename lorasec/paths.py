"""Where lorasec keeps extracted data and converted weights (a per-user cache, never the repo)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$LORASEC_CACHE if set, else $XDG_CACHE_HOME/lorasec, else ~/.cache/lorasec. Read at call time."""
    if os.environ.get("LORASEC_CACHE"):
        root = Path(os.environ["LORASEC_CACHE"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lorasec"
    root.mkdir(parents=True, exist_ok=True)
    return root
