"""ONION (Qi et al., EMNLP 2021, arXiv 2011.10369): an input filter that deletes the words whose removal makes the
sentence much more fluent to a causal language model.

For a sentence of words w_1..w_n, p_0 is its perplexity and p_i that of the sentence with w_i left out; w_i's
suspicion is f_i = p_0 - p_i. Words with f_i > t are deleted and the model answers the cleaned sentence (ONION
rewrites inputs, it rejects none). Sentences of one word are left alone.

- The scoring LM is `scorer` (default SmolLM2-135M, offline, standing in for the paper's GPT-2). Perplexity is
  exp(mean next-token NLL) of the sentence's tokens after one leading BOS token, exactly what transformers' own
  `model(ids, labels=ids).loss` gives for that sentence alone (tests/test_defenses.py checks it).
- All n+1 variants of a sentence go through the LM in one batch; several sentences may share a batch up to
  `batch_rows` rows. Against the naive one call per variant, with SmolLM2 at 2 threads (BENCHMARKS.md, "ONION:
  batched leave-one-out scoring"): one batch per sentence 2.9x, packing 3.1x, `scoring: shared_prefix` (the
  sentence and its variants in one packed row, each variant running only past its shared prefix) 4.9x in fp32
  and 5.9x under bf16 autocast (`precision: bf16`).
- t is `threshold` if given, else chosen on clean validation rows: the smallest of the candidate bars (quantiles of
  the validation words' suspicions, and "delete nothing") for which the trained model's validation accuracy on the
  cleaned rows drops by at most `max_val_drop` (the paper picks its bar on clean validation data the same way).
- Word scores depend only on the scorer and the text, so they are kept in a small SQLite cache under the cache
  directory (`onion-scores.sqlite`): a sweep scores the same test and validation sentences once, not per cell.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from lorasec.config import CausalLMConfig, Frozen, SmolLM2Config
from lorasec.defenses.base import DEFENSES, Context, Defense, Rejected
from lorasec.paths import cache_dir

QUANTILES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.975, 0.99)


class Onion(Frozen):
    kind: Literal["onion"] = Field(description="delete words whose removal lowers a causal LM's perplexity most")
    threshold: float | None = Field(None, description="fixed suspicion bar (perplexity drop); unset = chosen on "
                                    "clean validation rows")
    max_val_drop: float = Field(0.02, ge=0, le=1, description="largest validation-accuracy drop the chosen bar may "
                                "cost (when `threshold` is unset)")
    val_rows: int = Field(300, ge=10, description="validation rows the bar is chosen on (the first ones)")
    max_tokens: int = Field(128, ge=4, le=2048, description="scorer tokens per sentence (longer ones are cut)")
    batch_rows: int = Field(1, ge=1, description="LM rows per batch, whole sentences (n+1 variants each) packed up to "
                            "it; 1 = one batch per sentence, the fastest on CPU (BENCHMARKS.md)")
    scorer: CausalLMConfig = Field(default_factory=SmolLM2Config, description="the causal LM that scores fluency")
    scoring: Literal["variants", "shared_prefix"] = Field(
        "variants", description="how the leave-one-out variants go through the scorer: `variants` = each variant "
        "whole, a sentence's n+1 variants in one batch; `shared_prefix` = a sentence and its variants in one packed "
        "row, each variant running only the tokens after the prefix it shares with the sentence (about half the "
        "work; the same suspicions to float rounding)", json_schema_extra={"key": "if_set"})
    precision: Literal["fp32", "bf16"] = Field("fp32", description="the scorer's forward in float32 or under bfloat16 "
                                               "autocast (about 1.4x faster on CPU; suspicions correlate 0.9998)")


def variants(text: str) -> list[str]:
    """The sentence, then each leave-one-word-out variant (whitespace words)."""
    words = text.split()
    return [" ".join(words)] + [" ".join(words[:i] + words[i + 1:]) for i in range(len(words))]


def _ids(tokenizer, text: str, max_tokens: int) -> list[int]:
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return ([start] + tokenizer(text, add_special_tokens=False)["input_ids"])[:max_tokens]


def perplexities(model, tokenizer, texts: Sequence[str], max_tokens: int, precision: str = "fp32") -> np.ndarray:
    """Perplexity of each text (one batch, right-padded): exp of the mean NLL of its tokens after the BOS."""
    import torch

    rows = [_ids(tokenizer, t, max_tokens) for t in texts]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                            reduction="none").view(len(rows), width - 1)
    m = mask[:, 1:].float()
    mean = (nll * m).sum(1) / m.sum(1).clamp(min=1)
    return torch.exp(mean).double().numpy()


def _packed_row(rows: list[list[int]]) -> tuple[list[int], list[int], list[tuple[int, int]], list[list[int]]]:
    """One sentence's variants as one packed row: the sentence's tokens, then for each variant only the tokens after
    the prefix it shares with the sentence. Returns the row's tokens, their positions, each token's (prefix length it
    sees, first packed index of its own segment), and per variant the packed index whose output predicts each of its
    tokens 1..n-1."""
    orig = rows[0]
    tokens, positions = list(orig), list(range(len(orig)))
    sees = [(0, 0)] * len(orig)  # the sentence itself: plain causal attention over its own tokens
    sources = [list(range(len(orig) - 1))]
    for v in rows[1:]:
        c = 0
        while c < min(len(orig), len(v)) and orig[c] == v[c]:
            c += 1
        base = len(tokens)
        tokens += v[c:]
        positions += list(range(c, len(v)))
        sees += [(c, base)] * (len(v) - c)
        # v[t] (t >= 1) is predicted by the output at v's position t-1: the sentence's own when t-1 < c
        sources.append([t - 1 if t - 1 < c else base + (t - 1 - c) for t in range(1, len(v))])
    return tokens, positions, sees, sources


def shared_prefix_perplexities(model, tokenizer, texts: Sequence[str], max_tokens: int,
                               precision: str = "fp32") -> list[np.ndarray]:
    """Per text, the perplexities of [sentence, each leave-one-word-out variant] as `perplexities` gives them, but each
    sentence and all its variants in one packed row: a variant's tokens up to where it first differs from the sentence
    are the sentence's (same tokens, same positions, same causal context), so they are computed once and only the rest
    of each variant is run, attending to that shared prefix through a block mask. About half the tokens of running
    every variant whole; the same numbers to float rounding (tests/test_defenses.py)."""
    import torch

    variant_ids = [[_ids(tokenizer, v, max_tokens) for v in variants(t)] for t in texts]
    packs = [_packed_row(rows) for rows in variant_ids]
    width = max(len(p[0]) for p in packs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(packs), width), pad, dtype=torch.long)
    pos = torch.zeros((len(packs), width), dtype=torch.long)
    allow = torch.zeros((len(packs), 1, width, width), dtype=torch.bool)
    for b, (tokens, positions, sees, _) in enumerate(packs):
        n = len(tokens)
        ids[b, :n] = torch.tensor(tokens)
        pos[b, :n] = torch.tensor(positions)
        q = torch.arange(n)
        c = torch.tensor([s[0] for s in sees])
        base = torch.tensor([s[1] for s in sees])
        k = torch.arange(n)[None, :]
        shared = k < c[:, None]  # the sentence's tokens before the point of difference
        own = (k >= base[:, None]) & (k <= q[:, None])  # the token's own segment, causally
        allow[b, 0, :n, :n] = shared | own
        allow[b, 0, n:, 0] = True  # padding rows attend somewhere (their outputs are unused)
    mask = allow if getattr(model.config, "_attn_implementation", "sdpa") != "eager" else \
        torch.zeros(allow.shape).masked_fill(~allow, torch.finfo(torch.float32).min)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    out = []
    for b, (_, _, _, sources) in enumerate(packs):
        ppl = []
        for v, src in zip(variant_ids[b], sources, strict=True):
            if not src:
                ppl.append(1.0)
                continue
            nll = -logp[b, torch.tensor(src), torch.tensor(v[1:])]
            ppl.append(float(torch.exp(nll.double().mean())))
        out.append(np.array(ppl))
    return out


def suspicions(ppl: np.ndarray) -> np.ndarray:
    """f_i = p_0 - p_i for the variants' perplexities [p_0, p_1, ..., p_n]."""
    return ppl[0] - ppl[1:]


class ScoreCache:
    """Word suspicions by (scorer, max_tokens, sentence) in SQLite; safe for several sweep workers at once."""

    def __init__(self, scorer_id: str) -> None:
        self.scorer_id = scorer_id
        self.con = sqlite3.connect(cache_dir() / "onion-scores.sqlite", timeout=60)
        self.con.execute("pragma journal_mode=wal")
        self.con.execute("create table if not exists scores (key text primary key, value text not null)")

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.scorer_id}\0{text}".encode()).hexdigest()

    def get(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        out = {}
        for t in set(texts):
            row = self.con.execute("select value from scores where key = ?", (self.key(t),)).fetchone()
            if row is not None:
                out[t] = np.array(json.loads(row[0]), dtype=float)
        return out

    def put(self, found: dict[str, np.ndarray]) -> None:
        with self.con:
            self.con.executemany("insert or replace into scores values (?, ?)",
                                 [(self.key(t), json.dumps(v.tolist())) for t, v in found.items()])


def word_scores(texts: Sequence[str], model, tokenizer, max_tokens: int, batch_rows: int,
                progress: bool = False, cache: ScoreCache | None = None, precision: str = "fp32",
                scoring: str = "variants") -> list[np.ndarray]:
    """Each text's word suspicions (empty for a sentence of one word or none). Whole sentences are packed into
    batches of at most `batch_rows` variants (a sentence with more gets a batch of its own), shortest first; with
    `scoring="shared_prefix"` each sentence and its variants are one packed row (`shared_prefix_perplexities`)."""
    from tqdm.auto import tqdm

    known = cache.get(texts) if cache is not None else {}
    todo = sorted({t for t in texts if t not in known and len(t.split()) > 1}, key=lambda t: len(t.split()))
    found: dict[str, np.ndarray] = {}
    batch: list[str] = []
    bar = tqdm(total=len(todo), desc="onion", disable=None if progress else True, leave=False)

    def flush() -> None:
        if scoring == "shared_prefix":
            for t, ppl in zip(batch, shared_prefix_perplexities(model, tokenizer, batch, max_tokens, precision),
                              strict=True):
                found[t] = suspicions(ppl)
        else:
            rows = [v for t in batch for v in variants(t)]
            ppl = perplexities(model, tokenizer, rows, max_tokens, precision)
            at = 0
            for t in batch:
                n = len(t.split()) + 1
                found[t] = suspicions(ppl[at : at + n])
                at += n
        bar.update(len(batch))
        batch.clear()

    for t in todo:
        if batch and sum(len(b.split()) + 1 for b in batch) + len(t.split()) + 1 > batch_rows:
            flush()
        batch.append(t)
    if batch:
        flush()
    bar.close()
    if cache is not None and found:
        cache.put(found)
    known |= found
    return [known.get(t, np.zeros(0)) for t in texts]


def clean(text: str, scores: np.ndarray, threshold: float) -> str:
    """The sentence without the words whose suspicion exceeds the bar (one-word sentences are left alone)."""
    words = text.split()
    if len(words) <= 1 or len(scores) != len(words):
        return text
    return " ".join(w for w, f in zip(words, scores, strict=True) if not f > threshold)


def choose_threshold(texts: Sequence[str], labels: np.ndarray, scores: list[np.ndarray], predict,
                     max_drop: float) -> float:
    """The smallest candidate bar whose cleaned validation accuracy is within `max_drop` of the uncleaned one."""
    every = np.concatenate([s for s in scores if len(s)] or [np.zeros(1)])
    candidates = sorted({float(np.quantile(every, q)) for q in QUANTILES} | {float(np.inf)})
    base = float((predict(list(texts)).argmax(1) == labels).mean())
    for t in candidates:
        cleaned = [clean(x, s, t) for x, s in zip(texts, scores, strict=True)]
        if base - float((predict(cleaned).argmax(1) == labels).mean()) <= max_drop:
            return t
    return float(np.inf)


def input_filter(data, cfg: Onion, ctx: Context) -> Rejected:
    if "onion_lm" not in ctx.memo:  # loaded once per cell
        ctx.memo["onion_lm"] = ctx.need("language_model", "defense.scorer")()
    model, tokenizer = ctx.memo["onion_lm"]
    if "onion_cache" not in ctx.memo:  # one connection per cell
        ctx.memo["onion_cache"] = ScoreCache(json.dumps({"scorer": cfg.scorer.model_dump(mode="json"),
                                                         "max_tokens": cfg.max_tokens, "precision": cfg.precision}
                                                        | ({"scoring": cfg.scoring} if cfg.scoring != "variants"
                                                           else {}), sort_keys=True))
    cache = ctx.memo["onion_cache"]
    threshold = cfg.threshold if cfg.threshold is not None else ctx.memo.get("onion_threshold")
    if threshold is None:  # chosen once per cell: the clean and triggered sets share it
        val = ctx.need("val", "defense")
        n = min(cfg.val_rows, len(val))
        vt = list(val.texts[:n])
        vs = word_scores(vt, model, tokenizer, cfg.max_tokens, cfg.batch_rows, ctx.progress, cache,
                         cfg.precision, cfg.scoring)
        threshold = choose_threshold(vt, val.labels[:n], vs, ctx.need("predict", "defense"), cfg.max_val_drop)
        ctx.memo["onion_threshold"] = threshold
    scores = word_scores(data.texts, model, tokenizer, cfg.max_tokens, cfg.batch_rows, ctx.progress, cache,
                         cfg.precision, cfg.scoring)
    texts = tuple(clean(t, s, threshold) for t, s in zip(data.texts, scores, strict=True))
    top = np.array([s.max() if len(s) else 0.0 for s in scores], dtype=float)
    return Rejected(top, np.zeros(len(texts), dtype=bool), texts, {"threshold": threshold})


DEFENSES.add("onion", Defense(Onion, input_filter=input_filter))
