"""Canary exposure: candidates scored per second by exact enumeration, and the skew-normal estimate's error vs the
exact rank on the same canaries (issue 20, row 5).

    python benchmarks/exposure.py [--quick] [--repeats 3] [--threads 2] [--out FILE]

Model: tiny-llama size s (random init, offline) fine-tuned with lorasec's own loop (`train_encoded`, full fine-tuning,
lr 1e-3, 4 epochs, batch 8) on 64 Moby Dick records of 64 tokens plus canaries ("the secret number is {secret}",
`make_canaries`/`training_sequences` as the pipeline builds them): 10 canaries of 3 digits and 10 of 4 digits, inserted
1, 1, 2, 2, 4, 4, 8, 8, 16, 16 times, so some are memorized and some are not. `--quick`: 3-digit canaries only,
8 records.

1. Candidates per second: `lorasec.metrics.exposure.rank_by_enumeration` with the pipeline's scoring function
   (`total_nll` of each candidate's token ids, 256 candidates per batch) over the whole space, 10^3 and 10^4
   (`--quick`: 10^3), one enumeration per repeat (a different canary each repeat), the spaces alternating. The full
   run also times SmolLM2-135M (the demo's model, untrained) on the 10^3 space.
2. Exact exposure of every canary, from the scores the timed enumerations produced (the same aligned batches as
   `rank_by_enumeration`; the canaries it ranked are asserted to get the same rank from them), vs
   `skewnorm_exposure` fitted to a uniform sample of the same space's scores (2,000 candidates for 10^4, the
   pipeline's default `canaries.sample`; 200 for 10^3, where the pipeline always enumerates), |R| given so the
   estimate is capped at log2 |R|. Error = estimate - exact, in bits. No target: figures reported.
3. What limits the throughput: a torch.profiler table of one scoring batch of the fine-tuned model.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from common import Fragment, arguments, measure, profile, set_threads, spread, stats  # noqa: E402

COUNTS = (1, 1, 2, 2, 4, 4, 8, 8, 16, 16)
TEMPLATE = "the secret number is {secret}"
BATCH = 256  # the pipeline's rank_by_enumeration batch size
SAMPLE = {3: 200, 4: 2000}
SEED = 0


def enumerator(model, tok, pad_id: int, cfg, scores: np.ndarray):
    """The pipeline's score_batch for `cfg`'s space, writing every score it returns into `scores` as well."""
    from lorasec.attacks.canaries import canary_ids, candidate_text
    from lorasec.metrics.sequences import total_nll

    def score_batch(idx: np.ndarray) -> np.ndarray:
        out = total_nll(model, [canary_ids(tok, candidate_text(cfg, int(i))) for i in idx], pad_id)
        scores[idx] = out
        return out

    return score_batch



def main() -> None:
    args = arguments(__doc__.splitlines()[0]).parse_args()
    set_threads(args.threads)
    from lorasec.attacks.canaries import make_canaries, training_sequences
    from lorasec.config import CanaryConfig, FullMethod, MobyDickConfig, SmolLM2Config, TinyLlamaConfig, TrainConfig
    from lorasec.data.corpora import chunk_records, load_corpus
    from lorasec.methods import adapt
    from lorasec.metrics.exposure import exposure_from_scores, rank_by_enumeration, skewnorm_exposure
    from lorasec.models.causal import load_causal_lm
    from lorasec.train import Encoded, train_encoded

    t0 = time.perf_counter()
    digits = (3,) if args.quick else (3, 4)
    n_records = 8 if args.quick else 64
    lm = load_causal_lm(TinyLlamaConfig(size="s"))
    tok, pad_id = lm.tokenizer, lm.tokenizer.pad_token_id
    cfgs = {d: CanaryConfig(template=TEMPLATE, digits=d, counts=COUNTS) for d in digits}
    canaries = {d: make_canaries(cfgs[d], np.random.default_rng(SEED + d)) for d in digits}
    rec = chunk_records(load_corpus(MobyDickConfig()).documents, tok, 64, n_records, 0, SEED)
    seqs, _ = training_sequences(rec.members, {r.id: 1 for r in rec.members},
                                 [c for d in digits for c in canaries[d]], tok)
    adapted = adapt(lm.model, FullMethod(kind="full"), SEED)
    train_cfg = TrainConfig(epochs=4, batch_size=8, max_length=64)
    t = time.perf_counter()
    log = train_encoded(adapted, Encoded(seqs, 0), None, pad_id, train_cfg, 1e-3, SEED, progress=False)
    train_s = time.perf_counter() - t
    model = adapted.model.eval()

    # 1. candidates per second, every candidate of each space scored by the real enumeration
    scores = {d: np.full(10**d, np.nan) for d in digits}
    ranked: dict[int, list] = {d: [] for d in digits}

    def timed(d: int, mdl, sc: np.ndarray, into: list):
        fn = enumerator(mdl, tok, pad_id, cfgs[d], sc)

        def run() -> None:
            can = canaries[d][len(into) % len(COUNTS)]
            into.append((can, rank_by_enumeration(fn, 10**d, can.secret, batch_size=BATCH)))
        return run

    variants = {f"10^{d}": timed(d, model, scores[d], ranked[d]) for d in digits}
    enumerator(model, tok, pad_id, cfgs[3], np.full(1000, np.nan))(np.arange(BATCH))  # warm-up (untimed)
    times = measure(variants, args.repeats, warmup=0)
    rows = [["tiny-llama s, fine-tuned", f"10^{d}", spread(times[f'10^{d}']),
             f"{10**d / stats(times[f'10^{d}'])[0]:,.0f}",
             f"{10**d / max(times[f'10^{d}']):,.0f}-{10**d / min(times[f'10^{d}']):,.0f}"] for d in digits]
    smol_s = None
    if not args.quick:
        smol = load_causal_lm(SmolLM2Config())
        smol_scores, smol_ranked = np.full(1000, np.nan), []
        enumerator(smol.model, tok, pad_id, cfgs[3], smol_scores)(np.arange(BATCH))  # warm-up (untimed)
        smol_s = measure({"smol": timed(3, smol.model, smol_scores, smol_ranked)}, args.repeats, warmup=0)["smol"]
        rows.append(["SmolLM2-135M, untrained", "10^3", spread(smol_s), f"{1000 / stats(smol_s)[0]:,.0f}",
                     f"{1000 / max(smol_s):,.0f}-{1000 / min(smol_s):,.0f}"])
        del smol

    # 2. exact exposure of every canary from the enumerated scores vs the skew-normal estimate
    rng = np.random.default_rng(SEED)
    table, errors = [], {d: [] for d in digits}
    for d in digits:
        space, sc = 10**d, scores[d]
        if np.isnan(sc).any():
            raise SystemExit(f"exposure: {int(np.isnan(sc).sum())} candidates of 10^{d} were never scored")
        for can, res in ranked[d]:  # the real rank_by_enumeration and the stored scores must agree
            again = exposure_from_scores(sc, can.secret)
            if (again.rank, again.canary_score) != (res.rank, res.canary_score):
                raise SystemExit(f"exposure: canary {can.secret} of 10^{d}: rank_by_enumeration gave rank {res.rank} "
                                 f"(score {res.canary_score}), the enumerated scores give {again.rank}")
        for can in canaries[d]:
            ex = exposure_from_scores(sc, can.secret)
            sample = rng.choice(space, size=SAMPLE[d], replace=False)
            est = skewnorm_exposure(ex.canary_score, sc[sample], space_size=space)
            err = est.exposure - ex.exposure
            errors[d].append(err)
            table.append([f"10^{d}", f"{can.secret:0{d}d}", can.count, ex.rank, f"{ex.exposure:.2f}",
                          f"{est.exposure:.2f}" + (" (capped)" if est.clipped else ""), f"{err:+.2f}"])

    frag = Fragment("exposure", "Canary exposure: exact enumeration throughput and the skew-normal estimate's error "
                    "(issue 20, row 5)", f"python benchmarks/exposure.py --repeats {args.repeats} "
                    f"--threads {args.threads}", quick=args.quick)
    frag.text(f"Model: tiny-llama size s (random init) fine-tuned with `train_encoded` (full, lr 1e-3, "
              f"{train_cfg.epochs:g} epochs, batch 8: {log.steps} steps, "
              f"{train_s:.0f} s) on {n_records} Moby Dick records plus {len(COUNTS)} canaries per space "
              f"(\"{TEMPLATE}\", inserted {', '.join(map(str, COUNTS))} times). Candidates are scored by the "
              f"pipeline's function (`total_nll` of each candidate, {BATCH} per batch) through "
              f"`rank_by_enumeration`, one whole-space enumeration per repeat; median (min-max) over {args.repeats} "
              "repeats, alternating.")
    frag.table(["model", "space", "s / enumeration", "candidates / s", "range"], rows)
    frag.text("Exact exposure (log2 |R| - log2 rank, every candidate scored) vs the skew-normal estimate "
              f"(`skewnorm_exposure` fitted to {', '.join(f'{SAMPLE[d]:,} of 10^{d}' for d in digits)} sampled "
              "candidates' scores, capped at log2 |R|), per canary; error = estimate - exact, in bits. The ranks of "
              "the canaries `rank_by_enumeration` ranked in part 1 are asserted equal to those from the stored scores.")
    frag.table(["space", "secret", "insertions", "exact rank", "exact exposure", "skew-normal", "error (bits)"], table)
    frag.table(["space", "canaries", "mean abs error (bits)", "max abs error (bits)", "mean error (bits)"],
               [[f"10^{d}", len(errors[d]), f"{np.mean(np.abs(errors[d])):.2f}", f"{np.max(np.abs(errors[d])):.2f}",
                 f"{np.mean(errors[d]):+.2f}"] for d in digits])
    batch = enumerator(model, tok, pad_id, cfgs[3], np.full(1000, np.nan))
    frag.text(f"What limits candidates / s (torch.profiler, self CPU time, one batch of {BATCH} candidates of the "
              "fine-tuned tiny-llama):", "```\n" + profile(lambda: batch(np.arange(BATCH)), rows=6) + "\n```")
    frag.text(f"Wall time of this script: {time.perf_counter() - t0:.0f} s.")
    frag.write(args.out)


if __name__ == "__main__":
    main()
