"""What every benchmark shares: the machine line, repeats with median and spread, peak memory, and the markdown
fragment each script writes (`bash benchmarks/run.sh` assembles the fragments into BENCHMARKS.md).

A benchmark script:

    from common import Fragment, machine, measure, set_threads
    ...
    frag = Fragment("step", "Training step vs a plain loop (issue 20, row 1)", command="python benchmarks/step.py")
    frag.table(["variant", "median s", "spread s", "ratio", "target", "met"], rows)
    frag.text("what limits it ...")
    frag.write(args.out)

Timings are medians over >= 3 repeats with their range; two variants are always timed in the same run,
alternating, and compared as a ratio, because absolute times on a shared machine drift.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def set_threads(threads: int) -> None:
    """Pin OpenMP/BLAS and torch to `threads` (call before heavy work; env first so child processes inherit it)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(threads)


def blas() -> str:
    """The BLAS/LAPACK torch was built with, from `torch.__config__.show()`."""
    import re

    import torch

    cfg = torch.__config__.show()
    found = re.findall(r"BLAS_INFO=(\w+)", cfg)
    if "USE_MKLDNN=ON" in cfg:
        found.append("oneDNN")
    isa = re.search(r"CPU capability usage: (\w+)", cfg)
    return "+".join(dict.fromkeys(found)) + (f" ({isa.group(1)})" if isa else "") or "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line naming what the figures depend on: CPU, cores, torch threads, BLAS, torch version, date."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu_model()}, {cores} cores, torch {torch.__version__} at {torch.get_num_threads()} threads, "
            f"BLAS {blas()}, CPU only, {datetime.date.today().isoformat()}")


def stats(xs: Sequence[float]) -> tuple[float, float, float]:
    """Median, min, max."""
    return statistics.median(xs), min(xs), max(xs)


def spread(xs: Sequence[float], digits: int = 3) -> str:
    """'median (min-max)' of the repeats."""
    m, lo, hi = stats(xs)
    return f"{m:.{digits}g} ({lo:.{digits}g}-{hi:.{digits}g})"


def measure(variants: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall seconds of each variant, `repeats` times, the variants alternating (a drift hits them alike).

    `warmup` untimed calls of each variant first (allocator, kernels, caches)."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def met(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "**missed**"


def profile(fn: Callable[[], object], rows: int = 8) -> str:
    """torch.profiler's table of one call of `fn`, top `rows` operators by self CPU time (what a miss is made of)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def causal_lm_and_records(model: str, record_tokens: int, n_records: int):
    """A shipped causal LM ("tiny-llama" = size s, or SmolLM2-135M) and `n_records` records of `record_tokens`
    tokens cut from the shipped moby-dick corpus (seed 0): what the memorization benchmarks score and generate on."""
    from lorasec.config import MobyDickConfig, SmolLM2Config, TinyLlamaConfig
    from lorasec.data.corpora import chunk_records, load_corpus
    from lorasec.models.causal import load_causal_lm

    lm = load_causal_lm(TinyLlamaConfig(size="s") if model == "tiny-llama" else SmolLM2Config())
    return lm, chunk_records(load_corpus(MobyDickConfig()).documents, lm.tokenizer, record_tokens, n_records, 0, 0)


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (VmHWM) so the next `peak_rss_mb` covers only what follows (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """This process's peak resident set size since start or the last `reset_peak_rss`, in MiB (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def in_child(script: str, args: Sequence[str], threads: int, timeout: float | None = None) -> dict:
    """Run `python script args...` in a fresh process (its own peak memory) and return the JSON object it prints
    as its last stdout line."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{script} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class Fragment:
    """One section of BENCHMARKS.md: a title, the machine, the command, tables and text, written as markdown."""

    def __init__(self, name: str, title: str, command: str, quick: bool = False) -> None:
        self.name, self.title, self.command, self.quick = name, title, command, quick
        self.lines: list[str] = []

    def text(self, *paragraphs: str) -> Fragment:
        for p in paragraphs:
            self.lines += [p, ""]
        return self

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Fragment:
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "---|" * len(header))
        self.lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        self.lines.append("")
        return self

    def markdown(self) -> str:
        mode = " (`--quick`: reduced sizes, for a smoke check; the committed figures are from the full run)" \
            if self.quick else ""
        head = [f"## {self.title}", "", f"Machine: {machine()}.", "",
                f"Command: `{self.command}{' --quick' if self.quick else ''}`{mode}.", ""]
        return "\n".join(head + self.lines).rstrip() + "\n"

    def write(self, out: Path | None = None) -> Path:
        out = out or RESULTS / f"{self.name}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".md.tmp")
        tmp.write_text(self.markdown())
        tmp.replace(out)
        print(self.markdown())  # noqa: T201
        return out


def arguments(description: str):
    """The flags every benchmark takes: --quick, --repeats, --threads, --out."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="reduced sizes (smoke check, part of run.sh --quick)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads (default 2)")
    ap.add_argument("--out", type=Path, default=None, help="markdown fragment (default benchmarks/results/NAME.md)")
    return ap
