"""What a result records about where it ran (versions, host, device, threads) and what each stage cost."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("lorasec", "torch", "transformers", "peft", "accelerate", "numpy", "scikit-learn", "tokenizers",
            "safetensors", "pydantic")


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def source() -> dict[str, Any]:
    """Which lorasec computed a result: its version, the sha256 of its package source (every .py, .yaml and .j2
    file, by relative path) and, when the package sits in a git work tree, the commit and whether the package's
    files differ from it."""
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml", ".j2") and p.is_file()):
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    out: dict[str, Any] = {"version": _version("lorasec"), "source_sha256": digest.hexdigest(), "commit": None,
                           "dirty": None}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top and (Path(top) / "lorasec").resolve() == root:
        out["commit"] = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--", ".")
        out["dirty"] = None if status is None else bool(status)
    return out


def environment() -> dict:
    return {
        "lorasec": source(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16(),
        "versions": {p: _version(p) for p in PACKAGES},
    }


@functools.cache
def native_bf16() -> bool | None:
    """Whether this CPU computes bf16 matmuls in hardware (AVX-512 BF16 or AMX); None where /proc/cpuinfo is
    absent. Without them oneDNN emulates bf16: on an AVX2-only EPYC a MiniLM training step under bf16 autocast
    took 20 s against 1.4 s in fp32 (one thread), so `train.precision: bf16` is only the cheaper choice on
    CPUs that have it."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


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


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD = 4 << 20


def bound_allocator() -> None:
    """Serve every allocation of 4 MiB or more (logits, float64 vocabulary statistics, gradients) with its own
    mapping, returned to the OS when freed.

    glibc otherwise raises its mmap threshold to 32 MiB after the first large free and serves the 25 MiB float64
    temporaries of the vocabulary statistics from the heap, where freed blocks are kept and fragment: scoring
    32 records of 64 tokens with SmolLM2's 49k vocabulary peaked at 2.98 GB instead of 1.47 GB with this, and a
    memorization demo process reached 10 GB. Changes no number. A no-op off glibc."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


@functools.cache
def _libc() -> Any:
    """The C library, loaded once (None where it cannot be loaded)."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_freed_memory() -> None:
    """Hand memory freed by the stage that just ended back to the OS (glibc's malloc_trim), so the next stage of
    this cell, or the other cells of a sweep running beside it, start from what the process really holds.
    A no-op where the C library has no malloc_trim."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
