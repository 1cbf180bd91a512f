"""Peak resident memory of one memorization cell: full fine-tuning of SmolLM2-135M alone, and with a second
lorasec training process (LoRA r16 of the same cell) running beside it; per-stage profile from the record.

    python benchmarks/memory_cell.py [--out FILE] [--only "full" | "lora r16"]

Without --only: full fine-tuning alone, then full and LoRA r16 at the same time. With --only: that one cell
(whatever else the machine runs beside it is stated by the caller).

Each cell runs in its own `lorasec run` process (a fresh store in a temporary folder); this driver samples
the process's resident set size (psutil, every 0.2 s) and reads the per-stage profile the result stores
(`memory`: peak and current RSS when each stage ends).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

# the cell of issue 15: 128 members of 64 tokens (32 of them x4), 128 held out, canaries 3 digits x[1,4,16],
# epochs 4, batch 8, max_length 96, on the shipped moby-dick corpus
CELL = {
    "task": "memorization", "seed": 1, "model": {"name": "smollm2-135m"}, "corpus": {"name": "moby-dick"},
    "records": {"record_tokens": 64, "n_members": 128, "n_held_out": 128},
    "duplication": {"counts": [1, 4], "per_count": 32},
    "canaries": {"digits": 3, "counts": [1, 4, 16]},
    "train": {"epochs": 4, "batch_size": 8, "max_length": 96},
}
METHODS = {"full": {"kind": "full"}, "lora r16": {"kind": "lora", "rank": 16, "alpha": 32}}


def start(name: str, work: Path) -> tuple[subprocess.Popen, Path]:
    cfg = work / f"{name.replace(' ', '_')}.yaml"
    cfg.write_text(yaml.safe_dump(CELL | {"method": METHODS[name]}))
    store = work / f"{name.replace(' ', '_')}.db"
    exe = Path(sys.executable).parent / "lorasec"
    proc = subprocess.Popen([str(exe), "run", str(cfg), "--store", str(store)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    return proc, store


def sample_peak(proc: subprocess.Popen, out: dict) -> threading.Thread:
    def loop() -> None:
        p = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                peak = max(peak, p.memory_info().rss)
            except psutil.Error:
                break
            time.sleep(0.2)
        out["sampled_peak_mb"] = peak / 2**20

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def stored(store: Path) -> dict:
    (body,) = sqlite3.connect(store).execute("SELECT result FROM runs").fetchone()
    return json.loads(body)


def measure(names: list[str], work: Path) -> dict[str, dict]:
    """Run the named cells at the same time; per cell its sampled peak, its own peak and stage profile."""
    runs = {n: start(n, work) for n in names}
    out: dict[str, dict] = {n: {} for n in names}
    threads = [sample_peak(p, out[n]) for n, (p, _) in runs.items()]
    for n, (p, _) in runs.items():
        if p.wait() != 0:
            raise SystemExit(f"{n}: lorasec run failed ({p.returncode})")
    for t in threads:
        t.join()
    for n, (_, store) in runs.items():
        r = stored(store)
        out[n] |= {"memory": r["memory"], "timings": r["timings"], "threads": r["environment"]["torch_threads"]}
    return out


def table(title: str, res: dict[str, dict]) -> list[str]:
    stages = list(next(iter(res.values()))["memory"])
    lines = [f"**{title}**", "", "| cell | sampled peak RSS (MiB) | " + " | ".join(
        f"{s}: peak / now (MiB)" for s in stages) + " | total s | torch threads |",
        "|---" * (len(stages) + 4) + "|"]
    for n, r in res.items():
        cells = [f"{r['memory'][s]['peak_rss_mb']:.0f} / {r['memory'][s]['rss_mb']:.0f}" for s in stages]
        lines.append(f"| {n} | {r['sampled_peak_mb']:.0f} | " + " | ".join(cells)
                     + f" | {r['timings']['total_s']:.0f} | {r['threads']} |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/memory_cell.md"))
    ap.add_argument("--only", choices=sorted(METHODS), help="measure this one cell only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only:
            alone = measure([args.only], Path(tmp))
            lines = [f"`python benchmarks/memory_cell.py --only '{args.only}'` on {datetime.date.today()}", "",
                     *table(args.only, alone)]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text("\n".join(lines) + "\n")
            sys.stdout.write("\n".join(lines) + "\n")
            return
        (Path(tmp) / "alone").mkdir()
        (Path(tmp) / "beside").mkdir()
        alone = measure(["full"], Path(tmp) / "alone")
        beside = measure(["full", "lora r16"], Path(tmp) / "beside")
    lines = [
        "## Peak memory of the memorization cell (issue 15)", "",
        f"`python benchmarks/memory_cell.py` on {datetime.date.today()}, {platform.machine()}, "
        f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB. Cell: "
        f"`{json.dumps(CELL, separators=(',', ':'))}`. Per stage: the process's peak RSS so far and its RSS "
        "when the stage ends, as the stored result records them.", "",
        *table("full fine-tuning alone", alone),
        *table("full fine-tuning with LoRA r16 of the same cell training beside it (both at default threads)",
               beside),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
