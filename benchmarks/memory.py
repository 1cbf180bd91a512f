"""Peak memory of training: full fine-tuning vs LoRA vs head-only, MiniLM and SmolLM2 (issue 20, row 6).

    python benchmarks/memory.py [--quick] [--repeats 3] [--threads 2] [--out FILE]

Each configuration runs in its own child process (its peaks are its own): load the model, `lorasec.methods.adapt`
it, then `steps` optimizer steps of lorasec's loop (`lorasec.train.train_encoded`) at a fixed batch and length
(every row exactly `length` tokens, random token ids, so no padding or bucketing varies between runs):

- SmolLM2-135M, causal LM: batch 8 x 96 tokens (the memorization cell's batch and max_length);
- all-MiniLM-L6-v2, 2-class classification: batch 16 x 128 tokens.

Memory is the kernel's resident high-water mark (VmHWM, exact, not sampled): RSS after load, the whole-process
peak, the training-only peak (VmHWM reset just before training) and the training increment (that peak minus the
RSS just before training). The target (LoRA <= 60% of full on SmolLM2) is judged on the whole-process peak, what
a user sees. `train.checkpointing` (activation checkpointing, an option of lorasec's loop left out of the result
key) is measured for memory and step time, and its losses are asserted identical to the run without it.
`--quick`: tiny-llama (size m, the same 49k-token tokenizer) and tiny-bert instead, one repeat.
`--more`: also checkpointing on full fine-tuning (SmolLM2) and on LoRA (MiniLM) (over the 6-minute budget).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Fragment, arguments, in_child, met, peak_rss_mb, reset_peak_rss, rss_mb, set_threads, spread

TARGET = 0.60  # LoRA / full, whole-process peak, SmolLM2
STEPS = 2  # step 2 is full fine-tuning's peak: AdamW's two moments (made in step 1) + activations + gradients
METHODS = {"full": {"kind": "full"}, "lora r16": {"kind": "lora", "rank": 16, "alpha": 32},
           "head-only": {"kind": "head_only"}}


def cases(quick: bool, more: bool) -> list[dict]:
    """The configurations, in the order they run (and alternate) within each repeat."""
    lm = "tiny-llama" if quick else "smollm2"
    clf = "tiny-bert" if quick else "minilm"
    out = []
    for model, batch, length, options in ((lm, 8, 96, ("lora r16", "full") if more else ("lora r16",)),
                                          (clf, 16, 128, ("lora r16",) if more else ())):
        for name in METHODS:
            out.append({"model": model, "method": name, "batch": batch, "length": length, "steps": STEPS,
                        "checkpointing": False})
        for name in options:  # the option, on the same cells
            out.append({"model": model, "method": name, "batch": batch, "length": length, "steps": STEPS,
                        "checkpointing": True})
    return out


def label(case: dict) -> str:
    return case["method"] + (" + checkpointing" if case["checkpointing"] else "")


# ---------------------------------------------------------------------------------------------------------------- child
def child(case: dict, threads: int, profile: bool) -> dict:
    """One configuration in this process: load, adapt, train; memory and time as a JSON-able dict. With
    `profile`, afterwards (its peaks already read) one more forward + backward under torch.profiler."""
    set_threads(threads)
    import numpy as np
    from pydantic import TypeAdapter

    from lorasec.config import MethodConfig, ShippedClassifier, SmolLM2Config, TinyBert, TinyLlamaConfig, TrainConfig
    from lorasec.methods import adapt
    from lorasec.models.causal import load_causal_lm
    from lorasec.models.classifier import load_classifier
    from lorasec.tasks.classification import DEFAULT_LR as CLF_LR
    from lorasec.tasks.memorization import DEFAULT_LR as LM_LR
    from lorasec.train import Encoded, train_encoded

    rss_import = rss_mb()
    t0 = time.perf_counter()
    causal = case["model"] in ("smollm2", "tiny-llama")
    if causal:
        lm = load_causal_lm(SmolLM2Config() if case["model"] == "smollm2" else TinyLlamaConfig(size="m"))
        model, tok = lm.model, lm.tokenizer
    else:
        clf = load_classifier(ShippedClassifier() if case["model"] == "minilm" else
                              TinyBert(name="tiny-bert", hidden_size=128, layers=4, heads=4), 2, 0)
        model, tok = clf.model, clf.tokenizer
    load_s = time.perf_counter() - t0
    gc.collect()
    rss_load = rss_mb()
    method = TypeAdapter(MethodConfig).validate_python(METHODS[case["method"]])
    adapted = adapt(model, method, 0)

    rng = np.random.default_rng(0)
    n_rows, length = case["batch"] * case["steps"], case["length"]
    special = set(tok.all_special_ids)
    vocab = np.array([i for i in range(min(len(tok), model.config.vocab_size)) if i not in special])
    if causal:
        ids = [rng.choice(vocab, length).tolist() for _ in range(n_rows)]
        labels = None
    else:  # [CLS] ... [SEP], as the tokenizer encodes a row
        ids = [[tok.cls_token_id, *rng.choice(vocab, length - 2).tolist(), tok.sep_token_id] for _ in range(n_rows)]
        labels = rng.integers(0, 2, n_rows)
    cfg = TrainConfig(batch_size=case["batch"], max_length=length, steps=case["steps"],
                      checkpointing=case["checkpointing"])
    lr = (LM_LR if causal else CLF_LR)[method.kind]

    gc.collect()
    rss_before, peak_before = rss_mb(), peak_rss_mb()
    reset_peak_rss()
    log = train_encoded(adapted, Encoded(ids, 0), labels, tok.pad_token_id, cfg, lr, seed=1, progress=False)
    peak_train = peak_rss_mb()
    prof = profile_step(adapted.model, ids[: case["batch"]], labels, tok.pad_token_id) if profile else []
    return {"profile": prof, "rss_import": rss_import, "rss_load": rss_load, "rss_before": rss_before,
            "peak_train": peak_train, "peak_whole": max(peak_before, peak_train),
            "increment": peak_train - rss_before, "step_s": log.seconds / log.steps, "load_s": load_s,
            "losses": log.losses, "n_trainable": adapted.n_trainable, "n_total": adapted.n_total}


# ------------------------------------------------------------------------------------------------------------- profile
def profile_step(model, rows: list[list[int]], labels, pad_id: int) -> list[str]:
    """Top CPU-memory allocators (by operator) of one training forward + backward of `model` on `rows`."""
    import numpy as np
    from torch.profiler import ProfilerActivity, profile

    from lorasec.train import Encoded, collate

    batch = collate(Encoded(rows, 0), None if labels is None else labels[: len(rows)], np.arange(len(rows)),
                    pad_id, lm_labels=labels is None)
    model.train()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    table = prof.key_averages().table(sort_by="self_cpu_memory_usage", row_limit=8, max_name_column_width=36)
    keep = ("Name", "Self CPU Mem", "aten::")
    return [line.rstrip() for line in table.splitlines() if line.strip() and any(k in line for k in keep)]


# ----------------------------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = arguments(__doc__.splitlines()[0])
    ap.add_argument("--more", action="store_true",
                    help="also measure checkpointing on full fine-tuning (SmolLM2) and on LoRA (MiniLM)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--profile-after", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child), args.threads, args.profile_after)))  # noqa: T201
        return
    repeats = 1 if args.quick else args.repeats

    set_threads(args.threads)
    t_start = time.perf_counter()
    todo = cases(args.quick, args.more)
    runs: dict[int, list[dict]] = {i: [] for i in range(len(todo))}
    for rep in range(repeats):  # configurations alternate within each repeat: drift hits them alike
        for i, case in enumerate(todo):
            # the first LoRA run without the option also profiles one step, after its peaks are read
            profile = rep == 0 and i == 1
            runs[i].append(in_child(__file__, ["--child", json.dumps(case), "--threads", str(args.threads),
                                               *(["--profile-after"] if profile else [])], args.threads, timeout=600))

    # identical numbers: every repeat of a configuration, and checkpointing on vs off, give the same losses
    for i, case in enumerate(todo):
        for r in runs[i][1:]:
            if r["losses"] != runs[i][0]["losses"]:
                raise SystemExit(f"{case['model']} {label(case)}: losses differ between repeats: "
                                 f"{runs[i][0]['losses']} vs {r['losses']}")
        if case["checkpointing"]:
            j = next(k for k, c in enumerate(todo) if c == {**case, "checkpointing": False})
            if runs[i][0]["losses"] != runs[j][0]["losses"]:
                raise SystemExit(f"{case['model']} {case['method']}: checkpointing changed the losses: "
                                 f"{runs[j][0]['losses']} vs {runs[i][0]['losses']}")

    def med(i: int, key: str) -> float:
        return sorted(r[key] for r in runs[i])[len(runs[i]) // 2]

    names = {"smollm2": "SmolLM2-135M, causal LM, batch 8 x 96 tokens",
             "tiny-llama": "tiny-llama m (49k vocabulary), causal LM, batch 8 x 96 tokens",
             "minilm": "all-MiniLM-L6-v2, 2-class classification, batch 16 x 128 tokens",
             "tiny-bert": "tiny-bert (128 wide, 4 layers), classification, batch 16 x 128 tokens"}
    frag = Fragment("memory", "Peak memory: full vs LoRA vs head-only (issue 20, row 6)",
                    command="python benchmarks/memory.py", quick=args.quick)
    frag.text(
        f"Each configuration in its own process, {repeats} repeat{'s' * (repeats > 1)} (the configurations alternate); "
        f"{todo[0]['steps']} optimizer steps of `lorasec.train.train_encoded` (AdamW) after "
        "`lorasec.methods.adapt`, every row exactly the stated length (random token ids). Memory is the kernel's "
        "resident high-water mark (VmHWM: exact, not sampled), in MiB, median (min-max) over the repeats: "
        "**whole** = the process's peak from start to end (what a user sees), **train** = peak while training "
        "(VmHWM reset just before), **increment** = train peak - RSS just before training. Ratio = / full of "
        "the same model. `+ checkpointing` = `train.checkpointing: true` (activation checkpointing, "
        "non-reentrant); its losses are asserted identical to the same run without it, as are all repeats' "
        "losses. Step time: training seconds / steps (the first step included), median (min-max). The weights are "
        "memory-mapped safetensors that become resident when training first touches them, so RSS after load is "
        "low and the train increment includes the float32 weights (SmolLM2: ~513 MiB, MiniLM: ~87 MiB).")
    verdicts = []
    for model in dict.fromkeys(c["model"] for c in todo):
        idx = [i for i, c in enumerate(todo) if c["model"] == model]
        full = next(i for i in idx if todo[i]["method"] == "full" and not todo[i]["checkpointing"])
        rows = []
        for i in idx:
            case, rs = todo[i], runs[i]
            plain = next(k for k in idx if todo[k] == {**case, "checkpointing": False})
            ratio_whole = med(i, "peak_whole") / med(full, "peak_whole")
            ratio_inc = med(i, "increment") / med(full, "increment")
            is_target = model in ("smollm2", "tiny-llama") and case["method"] == "lora r16"
            target = f"<= {TARGET:.0%} of full (whole)" if is_target else "-"
            verdict = met(ratio_whole, TARGET, higher_is_better=False) if is_target else "-"
            if is_target:
                verdicts.append((label(case), ratio_whole, verdict))
            step_vs = med(i, "step_s") / med(plain, "step_s")
            rows.append([
                label(case), f"{rs[0]['n_trainable'] / 1e6:.2f}M", f"{med(i, 'rss_load'):.0f}",
                spread([r["peak_whole"] for r in rs], 4), spread([r["peak_train"] for r in rs], 4),
                spread([r["increment"] for r in rs], 4), f"{ratio_whole:.1%}", f"{ratio_inc:.1%}",
                spread([r["step_s"] for r in rs]), f"x{step_vs:.2f}" if case["checkpointing"] else "-",
                target, verdict])
        frag.text(f"**{names[model]}** ({runs[idx[0]][0]['n_total'] / 1e6:.1f}M parameters; RSS after imports "
                  f"{med(idx[0], 'rss_import'):.0f} MiB)")
        frag.table(["config", "trainable", "RSS after load", "whole peak", "train peak", "train increment",
                    "whole / full", "increment / full", "step s", "step time vs without", "target", "met"], rows)

    plain_lora = next(v for v in verdicts if "checkpointing" not in v[0])
    ckpt_lora = next((v for v in verdicts if "checkpointing" in v[0]), None)
    frag.text(
        f"Target ({names[todo[0]['model']].split(',')[0]}, whole-process peak): LoRA r16 <= {TARGET:.0%} of full "
        "(the target is set for SmolLM2). Without the option LoRA is at "
        f"{plain_lora[1]:.1%} ({plain_lora[2]})" + (f"; with `train.checkpointing` at {ckpt_lora[1]:.1%} "
                                                   f"({ckpt_lora[2]})." if ckpt_lora else "."))
    cost = [med(i, "step_s") / med(next(k for k, c in enumerate(todo) if c == {**todo[i], "checkpointing": False}),
                                   "step_s") for i, c in enumerate(todo) if c["checkpointing"]]
    frag.text(
        "Default: `train.checkpointing` stays **off**. It never changes a number (asserted above) and is left out "
        "of the result key, so it is a pure speed-for-memory trade, and here it costs "
        f"x{min(cost):.2f}-x{max(cost):.2f} step time (one more forward pass per step); a cell that fits in memory "
        "without it (every cell shipped: a few GiB at most) should not pay that. Turn it on "
        "(`train: {checkpointing: true}`) when memory is the limit: long sequences, a large vocabulary, or "
        "several sweep workers sharing one machine's memory.")
    frag.text("What LoRA's peak is made of without the option (torch.profiler `key_averages`, one more forward + "
              "backward of the LoRA r16 run, batch 8 x 96, CPU memory allocated by operator over the step, not all "
              "live at once; each 144 MB row is one float32 copy of the 8 x 96 x 49,152 logits):")
    frag.text("```\n" + "\n".join(runs[1][0]["profile"]) + "\n```")
    frag.text(f"Wall time of this benchmark: {time.perf_counter() - t_start:.0f} s.")
    frag.write(args.out)



if __name__ == "__main__":
    main()
