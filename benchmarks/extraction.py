"""Extraction: batched KV-cache greedy generation vs one `generate` call per record (issue 20, row 3).

    python benchmarks/extraction.py [--quick] [--repeats 3] [--threads 2] [--out FILE]

Records are the memorization task's: Moby Dick (shipped corpus) cut into 64-token windows by
`lorasec.data.corpora.chunk_records` (seed 0); each prompt is a record's first 32 tokens and 32 tokens are generated
(the task's `extraction` defaults: prefix_tokens 32, new_tokens 32, batch_size 32). Model: SmolLM2-135M (offline,
float32), 256 records; `--quick`: tiny-llama size s (random init), 32 records.

- batched: `lorasec.models.generate.greedy` over all records (left padding, KV cache, 32 prompts per `generate`
  call), the code path of the memorization pipeline;
- per record: one `model.generate` call per record with the same settings (greedy, max_new_tokens =
  min_new_tokens = 32, use_cache=True: the fair baseline keeps the KV cache).

One generate call per record for all records costs far more than the time budget on 2 cores, so each repeat times the
per-record variant on a subset (`PER_RECORD` records, a different slice each repeat) and the comparison is per record:
ratio = (per-record seconds / record) / (batched seconds / record). Every record generated both ways is asserted to
get the same 32 tokens from both (and the batched tokens to be the same in every repeat). The two variants alternate
within each repeat (common.measure); one untimed warm-up call of each (one batch, one record) comes first.
Target: >= 10x. A missed target gets a torch.profiler table of both variants.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from common import Fragment, arguments, causal_lm_and_records, measure, met, profile, set_threads, spread, stats  # noqa: E402

TARGET = 10.0
PREFIX, NEW, BATCH, RECORD_TOKENS = 32, 32, 32, 64  # the memorization task's extraction defaults
FULL = {"model": "smollm2-135m", "records": 256, "per_record": 8}
QUICK = {"model": "tiny-llama", "records": 32, "per_record": 8}


def per_record(model, prompts: list[list[int]], pad_id: int) -> list[list[int]]:
    """The baseline: one `generate` call per prompt, same greedy settings as `greedy`, KV cache on."""
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p])
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW,
                                 min_new_tokens=NEW, do_sample=False, num_beams=1, pad_token_id=pad_id,
                                 use_cache=True)
            out.append(gen[0, ids.shape[1]:].tolist())
    return out



def main() -> None:
    args = arguments(__doc__.splitlines()[0]).parse_args()
    set_threads(args.threads)
    from lorasec.models.generate import greedy

    size = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    lm, rec = causal_lm_and_records(size["model"], RECORD_TOKENS, size["records"])
    model, pad_id = lm.model, lm.tokenizer.pad_token_id
    prompts = [list(r.token_ids[:PREFIX]) for r in rec.members]
    n, k = len(prompts), size["per_record"]
    batched_out: list[list[list[int]]] = []
    single_out: list[tuple[int, list[list[int]]]] = []  # (first record index, tokens)

    def batched() -> None:
        batched_out.append(greedy(model, prompts, NEW, pad_id, BATCH))

    def single() -> None:
        start = len(single_out) * k % n
        single_out.append((start, per_record(model, prompts[start : start + k], pad_id)))

    greedy(model, prompts[:BATCH], NEW, pad_id, BATCH)  # warm-up: one batch, one record (untimed)
    per_record(model, prompts[:1], pad_id)
    times = measure({"batched": batched, "per record": single}, args.repeats, warmup=0)

    # identity: every repeat of the batched variant, and every record generated both ways
    ref = batched_out[0]
    if any(len(g) != NEW for g in ref):
        raise SystemExit(f"extraction: a batched record did not get exactly {NEW} new tokens")
    for r, out in enumerate(batched_out[1:], start=2):
        if out != ref:
            raise SystemExit(f"extraction: batched repeat {r} generated other tokens than repeat 1")
    checked, diff_records, diff_tokens = set(), 0, 0
    for start, out in single_out:
        for i, toks in enumerate(out):
            checked.add(start + i)
            if toks != ref[start + i]:
                diff_records += 1
                diff_tokens += sum(a != b for a, b in zip(toks, ref[start + i], strict=True))
    if diff_records:
        raise SystemExit(f"extraction: {diff_records} of {len(checked)} records differ between batched and "
                         f"per-record generation ({diff_tokens} tokens)")

    per_b = [t / n for t in times["batched"]]
    per_s = [t / k for t in times["per record"]]
    ratio = stats(per_s)[0] / stats(per_b)[0]
    what = f"{lm.info.get('name', size['model'])}" + (" (size s, random init)" if args.quick else "")
    frag = Fragment("extraction", "Extraction: batched KV-cache greedy generation vs one `generate` per record "
                    "(issue 20, row 3)", f"python benchmarks/extraction.py --repeats {args.repeats} "
                    f"--threads {args.threads}", quick=args.quick)
    frag.text(f"Model {what}; {n} Moby Dick records (64-token windows, seed 0), prompt = first {PREFIX} tokens, "
              f"{NEW} new tokens (the memorization task's extraction defaults); batched = `lorasec.models.generate."
              f"greedy`, batch {BATCH}, left padding, KV cache; per record = one `model.generate` per record, "
              f"KV cache on. Batched generates all {n} records per repeat; per record generates {k} records per "
              f"repeat (a different slice each repeat: it would take ~{stats(per_s)[0] * n:.0f} s "
              f"for all {n}), so the ratio is of seconds per record. Median (min-max) over {args.repeats} repeats, "
              "alternating.")
    frag.table(["variant", "records / repeat", "s / repeat", "s / record", "ratio", "target", "met"], [
        ["per record (`generate` x1 each)", k, spread(times["per record"]), spread(per_s), "1.00x", "", ""],
        ["batched (`greedy`)", n, spread(times["batched"]), spread(per_b), f"**{ratio:.1f}x**",
         f">= {TARGET:g}x", met(ratio, TARGET)],
    ])
    frag.text(f"Generated tokens identical (asserted): {len(checked)} records generated both ways, "
              f"{len(checked) * NEW} tokens, 0 differ; the batched tokens of all {args.repeats} repeats are identical. "
              f"Every prompt is {PREFIX} tokens long (fixed-length records), so left padding adds no pad token here: "
              "the identity checked is batch-size invariance (batch of 32 vs 1) under float32 on CPU, as in the "
              "pipeline.")
    if ratio < TARGET:
        frag.text("What limits it (torch.profiler, self CPU time; one batch of the batched variant, then 2 records "
                  "of the per-record variant):",
                  "```\n" + profile(lambda: greedy(model, prompts[:BATCH], NEW, pad_id, BATCH)) + "\n```",
                  "```\n" + profile(lambda: per_record(model, prompts[:2], pad_id)) + "\n```")
    frag.text(f"Wall time of this script: {time.perf_counter() - t0:.0f} s.")
    frag.write(args.out)


if __name__ == "__main__":
    main()
