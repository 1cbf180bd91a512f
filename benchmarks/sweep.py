"""Sweep benchmarks (issue 16): parallel speed-up on one machine, and what a resume costs on a big store.

    python benchmarks/sweep.py [--quick] [--repeats N] [--out FILE]

1. Speed-up: one 8-cell tiny-bert grid (4 clean + 4 label-flip cells) computed from scratch with
   `--workers 2 --threads-per-worker 1` and with `--workers 1 --threads-per-worker 2`, alternating, in one run:
   wall time of the whole `lorasec sweep` command (worker start-up included), median over repeats, and the ratio.
2. Resume cost: a store holding 1,000 cells (cheap rows with the grid's real keys), then `lorasec sweep --dry-run`
   and a resume with nothing to do, each timed as the user sees it (a fresh `lorasec` process).
Run it on a quiet machine: another job using the cores changes both figures. `--quick`: 20 steps per cell and
200 stored cells.
"""

from __future__ import annotations

import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Fragment, arguments, met  # noqa: E402

from lorasec.grid import load_grid
from lorasec.store import config_key, open_store, save

SPEEDUP_GRID = {
    "base": {
        "model": {"name": "tiny-bert", "hidden_size": 128, "layers": 2, "heads": 2},
        "data": {"name": "tweets", "max_train": 640, "max_test": 320},
        "method": {"kind": "full"},
        "attack": {"kind": "label_flip", "rate": 0.2},
        "train": {"steps": 60, "batch_size": 16, "max_length": 64},
        "eval": {"batch_size": 64, "max_length": 64},
    },
    "axes": {"seed": 2, "method": [{"kind": "full"}, {"kind": "lora", "rank": 8}]},
}
RESUME_GRID = {"base": {**SPEEDUP_GRID["base"], "attack": {"kind": "none"}}, "axes": {"seed": 1000}}


def lorasec(*args: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lorasec.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    if proc.returncode != 0:
        raise SystemExit(f"lorasec {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def speedup(tmp: Path, repeats: int, steps: int) -> tuple[list[str], list[list[object]]]:
    spec = copy.deepcopy(SPEEDUP_GRID)
    spec["base"]["train"]["steps"] = steps
    grid = tmp / "speedup.yaml"
    grid.write_text(yaml.safe_dump(spec))
    variants = {"2 workers x 1 thread": ("--workers", "2", "--threads-per-worker", "1"),
                "1 worker x 2 threads": ("--workers", "1", "--threads-per-worker", "2")}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(repeats):
        for name, flags in variants.items():
            store = tmp / f"s_{r}_{flags[1]}.db"
            times[name].append(lorasec("sweep", str(grid), "--store", str(store), *flags))
            print(f"  {name}: {times[name][-1]:.1f} s", flush=True)  # noqa: T201
    med = {v: statistics.median(t) for v, t in times.items()}
    ratio = med["1 worker x 2 threads"] / med["2 workers x 1 thread"]
    header = [f"variant (8 cells: 4 clean + 4 label flip, tiny-bert h128, {steps} steps)", "median s", "range s"]
    rows = [[v, f"{med[v]:.1f}", f"{min(t):.1f}-{max(t):.1f}"] for v, t in times.items()]
    rows.append(["**speed-up of 2x1 over 1x2** (target >= 1.6x)", f"**{ratio:.2f}x**", met(ratio, 1.6)])
    return header, rows


def resume(tmp: Path, repeats: int, n_cells: int) -> tuple[list[str], list[list[object]]]:
    spec = copy.deepcopy(RESUME_GRID)
    spec["axes"]["seed"] = n_cells
    grid = tmp / "resume.yaml"
    grid.write_text(yaml.safe_dump(spec))
    store = tmp / "resume.db"
    con = open_store(store)
    for cfg in load_grid(grid):
        save(con, {"key": config_key(cfg), "label": cfg.label(), "config": cfg.model_dump(mode="json"),
                   "metrics": {"clean": {"accuracy": 0.5}}})
    con.close()
    dry = [lorasec("sweep", str(grid), "--store", str(store), "--dry-run") for _ in range(repeats)]
    noop = [lorasec("sweep", str(grid), "--store", str(store)) for _ in range(repeats)]
    header = [f"{n_cells:,} cells stored", "median s", "range s", "target", "met"]
    return header, [
        ["`lorasec sweep --dry-run`", f"{statistics.median(dry):.2f}", f"{min(dry):.2f}-{max(dry):.2f}", "< 2 s",
         met(statistics.median(dry), 2, higher_is_better=False)],
        ["resume with nothing to do", f"{statistics.median(noop):.2f}", f"{min(noop):.2f}-{max(noop):.2f}", "< 2 s",
         met(statistics.median(noop), 2, higher_is_better=False)]]


def main() -> None:
    args = arguments(__doc__.splitlines()[0]).parse_args()
    repeats = 1 if args.quick else args.repeats
    frag = Fragment("sweep", "Sweeps: parallel speed-up and resume cost (issue 16)",
                    f"python benchmarks/sweep.py --repeats {repeats}", quick=args.quick)
    frag.text("Each figure is the wall time of a whole `lorasec sweep` command (a fresh process: start-up, worker "
              "spawn and torch import included), on a new store each time, the two variants alternating.")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        frag.table(*resume(tmp, repeats, 200 if args.quick else 1000))
        frag.table(*speedup(tmp, repeats, 20 if args.quick else 60))
    frag.text("Small models do not use two threads well, so two one-thread workers beat one two-thread worker.")
    frag.write(args.out)


if __name__ == "__main__":
    main()
