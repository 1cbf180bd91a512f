"""Where lorasec keeps extracted data and converted weights (a per-user cache, never the repo)."""

from __future__ import annotations

import hashlib
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


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (the GGUF is ~90 MB; pinned downloads are checked with it)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
