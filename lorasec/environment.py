"""What a result records about where it ran (versions, host, device, threads) and what each stage cost."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import socket
import sys
import time
from pathlib import Path

import torch

PACKAGES = ("lorasec", "torch", "transformers", "peft", "accelerate", "numpy", "scikit-learn", "tokenizers",
            "safetensors", "pydantic")


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "versions": {p: _version(p) for p in PACKAGES},
    }


def rss_mb() -> tuple[float, float | None]:
    """(peak, current) resident memory of this process in MiB; current is None where /proc is absent."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return peak, pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak, None


class Stages:
    """The per-stage profile of a cell: seconds of each stage, and resident memory (peak so far and current)
    when it ends, so a stored result says which stage set the process's memory peak."""

    def __init__(self) -> None:
        self._t = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.memory: dict[str, dict[str, float | None]] = {}

    def done(self, name: str) -> None:
        release_freed_memory()
        now = time.perf_counter()
        self.timings[f"{name}_s"] = now - self._t
        self._t = now
        peak, current = rss_mb()
        self.memory[name] = {"peak_rss_mb": round(peak, 1), "rss_mb": None if current is None else round(current, 1)}


def release_freed_memory() -> None:
    """Hand memory freed by the stage that just ended back to the OS (glibc's malloc_trim), so the next stage of
    this cell, or the other cells of a sweep running beside it, start from what the process really holds.
    A no-op where the C library has no malloc_trim."""
    global _TRIM
    if _TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None
