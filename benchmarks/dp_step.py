"""A DP-SGD training step vs a non-DP one, side by side (issue 34).

    python benchmarks/dp_step.py [--quick] [--repeats 3] [--threads 2] [--out FILE]

SmolLM2-135M on Moby Dick 64-token records, batch 4 (--quick: tiny-llama s), LoRA r8 on all linear layers, and
full fine-tuning of tiny-llama s (DP full fine-tuning of SmolLM2 is out of reach on 2 CPU cores: per-sample
gradients of 135M parameters x batch). lorasec's own loop (`train_encoded`), three ways: no DP; `method.dp` with
noise 0, no clipping, on the non-DP loop's own batches (the per-sample gradient machinery alone); and DP-SGD as
the study runs it (noise multiplier 1, clip 1, Poisson sampling, so the batch size varies around 4). Each way
trains its own deepcopy of the same adapted model, the ways alternating, one untimed warm-up call each; ratios
are of medians against no DP.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import Fragment, arguments, measure, set_threads, spread, stats  # noqa: E402
from step import SEED, setup  # noqa: E402

WAYS = {
    "no DP": None,
    "per-sample gradients only (noise 0, no clip, same batches)": {"noise_multiplier": 0.0, "max_grad_norm": 1e12,
                                                                    "sampling": "batches", "delta": 1e-9},
    "DP-SGD (noise 1, clip 1, Poisson)": {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": 1e-9},
}


def run_setup(method: str, quick: bool, steps: int, repeats: int) -> tuple[list, dict]:
    from lorasec.config import DPConfig
    from lorasec.train import train_encoded

    adapted, enc, labels, pad_id, cfg, lr, what = setup("causal", method, quick, steps)
    if method == "full" and not quick:
        raise SystemExit("full fine-tuning is measured on tiny-llama only (--quick setup)")
    copies = {k: (copy.deepcopy(adapted), None if v is None else DPConfig(**v)) for k, v in WAYS.items()}
    tokens: dict[str, int] = {k: 0 for k in copies}

    def runner(name: str):
        model, dp = copies[name]

        def go() -> None:
            log = train_encoded(model, enc, labels, pad_id, cfg, lr, SEED, progress=False, dp=dp)
            tokens[name] += log.tokens_seen
        return go

    times = measure({k: runner(k) for k in copies}, repeats, warmup=1)
    per = {k: [t / steps for t in v] for k, v in times.items()}
    base = stats(per["no DP"])[0]
    rows = [[f"{what}, {method}", name, spread(per[name]), f"{stats(per[name])[0] / base:.2f}x",
             f"{tokens[name] / (steps * (repeats + 1)):.0f}"] for name in copies]
    return rows, {k: stats(v)[0] for k, v in per.items()}


def main() -> None:
    args = arguments(__doc__.splitlines()[0]).parse_args()
    set_threads(args.threads)
    t0 = time.perf_counter()
    steps = 3
    rows, med = [], {}
    setups = [("lora", args.quick), ("full", True)]
    for method, quick in setups:
        r, m = run_setup(method, quick, steps, args.repeats)
        for row in r:
            print(" | ".join(map(str, row)), flush=True)  # noqa: T201
        rows += r
        med[(method, quick)] = m
    frag = Fragment("dp_step", "DP-SGD step vs non-DP step (issue 34)", command="python benchmarks/dp_step.py",
                    quick=args.quick)
    frag.table(["setup", "way", "s/step, median (min-max)", "time / no DP", "tokens per step (mean)"], rows)
    lora = med[("lora", args.quick)]
    frag.text(
        f"Median (min-max) over {args.repeats} repeats of {steps} steps each, the ways alternating on their own copies "
        "of one adapted model. A DP LoRA step on "
        f"{'tiny-llama s' if args.quick else 'SmolLM2-135M'} costs "
        f"{lora['DP-SGD (noise 1, clip 1, Poisson)'] / lora['no DP']:.2f}x a non-DP one; the per-sample gradients "
        "alone (Opacus's hooks on the adapters' linear layers) "
        f"{lora['per-sample gradients only (noise 0, no clip, same batches)'] / lora['no DP']:.2f}x. The DP-SGD row "
        "draws its batches by Poisson sampling, so its tokens per step differ from the others' (last column).",
        f"Wall time of this run: {time.perf_counter() - t0:.0f} s.")
    frag.write(args.out)


if __name__ == "__main__":
    main()
