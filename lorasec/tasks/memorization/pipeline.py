"""The memorization pipeline, top to bottom (paper 2, arXiv 2506.20856):

config -> causal LM + corpus records -> reference scores of the base model -> duplicated members + canaries
-> adapt (full / LoRA / head-only) -> train (same loop as classification, next-token loss)
-> extraction (prefix -> greedy suffix, similarity scores) -> canary exposure -> membership inference -> result.

The result keeps, per record, the generated token ids and every similarity; per canary, its rank and
exposure; per member and non-member, each MIA score; plus held-out loss so leakage is read beside utility.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np

from lorasec.attacks.canaries import (
    audit_canaries,
    canary_ids,
    candidate_text,
    duplication_counts,
    make_canaries,
    training_sequences,
)
from lorasec.data.corpora import chunk_records, load_corpus
from lorasec.environment import Stages
from lorasec.errors import InputError
from lorasec.methods import adapt
from lorasec.metrics.audit import audit as audit_bound
from lorasec.metrics.exposure import rank_by_enumeration, skewnorm_exposure
from lorasec.metrics.extraction import Embedder, aggregate_extraction, score_records
from lorasec.metrics.mia import (
    loss_score,
    min_k_plus_plus_score,
    min_k_score,
    reference_score,
    roc_metrics,
    zlib_score,
)
from lorasec.metrics.sequences import SequenceStats, sequence_stats, total_nll
from lorasec.models.causal import load_causal_lm
from lorasec.models.generate import greedy
from lorasec.tasks.base import TaskOutput
from lorasec.tasks.memorization import MemorizationConfig
from lorasec.train import Encoded, train_encoded

MIA_SCORES = ("loss", "reference", "zlib", "min_k", "min_k_plus_plus")


def mia_scores(target: SequenceStats, reference: SequenceStats, text: str, k: float) -> dict[str, float]:
    """Every MIA score of one record, each oriented so that higher means 'member'."""
    return {
        "loss": loss_score(target.logprobs),
        "reference": reference_score(target.logprobs, reference.logprobs),
        "zlib": zlib_score(target.logprobs, text),
        "min_k": min_k_score(target.logprobs, k),
        "min_k_plus_plus": min_k_plus_plus_score(target.logprobs, target.mu, target.sigma, k),
    }


def mean_nll(stats: list[SequenceStats]) -> float:
    """Mean per-token negative log-likelihood (nats) over all tokens of all sequences."""
    return float(-np.concatenate([s.logprobs for s in stats]).mean())


def run(cfg: MemorizationConfig, seeds: dict[str, int], progress: bool = True) -> TaskOutput:
    """Run one memorization audit cell: its result record and the trained model."""
    stages = Stages()
    lm = load_causal_lm(cfg.model)
    tok, pad = lm.tokenizer, lm.tokenizer.pad_token_id
    corpus = load_corpus(cfg.corpus)
    rec = chunk_records(corpus.documents, tok, cfg.records.record_tokens, cfg.records.n_members,
                        cfg.records.n_held_out, seeds["records"])
    members, held = list(rec.members), list(rec.held_out)
    all_ids = [list(r.token_ids) for r in members + held]
    # the reference model of the ratio attack is the base model itself, before fine-tuning
    ref_stats = sequence_stats(lm.model, all_ids, pad, with_vocab_stats=False, progress=progress)

    canaries = make_canaries(cfg.canaries, np.random.default_rng(seeds["canaries"]))
    dup = duplication_counts(members, cfg.duplication, np.random.default_rng(seeds["duplication"]))
    seqs, source = training_sequences(members, dup, canaries, tok)
    a = cfg.audit
    if a is not None:  # audit canaries: each trained on with probability 1/2, scored like members after training
        audit_ids, included = audit_canaries(a.canaries, a.tokens, tok, np.random.default_rng(seeds["audit"]))
        seqs += [s for s, inc in zip(audit_ids, included, strict=True) if inc]
        source += [f"audit:{i}" for i in np.flatnonzero(included)]
        audit_ref = sequence_stats(lm.model, audit_ids, pad, with_vocab_stats=False, progress=progress)
    truncated = sum(len(s) > cfg.train.max_length for s in seqs)
    if truncated:  # a cut canary or record is never fully trained on: refuse instead of measuring nonsense
        raise InputError(f"train.max_length: {truncated} training sequences are longer than {cfg.train.max_length}")
    adapted = adapt(lm.model, cfg.method, seeds["adapt"])
    stages.done("setup")

    log = train_encoded(adapted, Encoded(seqs, 0), None, pad, cfg.train, cfg.lr(), seeds["train"],
                        progress=progress, label=cfg.label(), dp=cfg.method.dp)
    model = adapted.model
    stages.done("train")

    # extraction: prefix of each member -> greedy continuation vs the true suffix
    e = cfg.extraction
    prompts = [list(r.token_ids[: e.prefix_tokens]) for r in members]
    truths = [list(r.token_ids[e.prefix_tokens : e.prefix_tokens + e.new_tokens]) for r in members]
    generated = greedy(model, prompts, e.new_tokens, pad, e.batch_size, progress)
    gen_texts = [tok.decode(g) for g in generated]
    true_texts = [tok.decode(t) for t in truths]
    embedder = Embedder()
    embedding_cut = embedder.count_truncated(gen_texts + true_texts)  # stored: cosines of cut texts are partial
    scores = score_records(generated, truths, gen_texts, true_texts, embedder=embedder)
    summary = aggregate_extraction(scores, e.relaxed_threshold)
    by_count = {
        str(c): asdict(aggregate_extraction([s for s, r in zip(scores, members, strict=True) if dup[r.id] == c],
                                            e.relaxed_threshold))
        for c in sorted(set(dup.values()))
    }
    stages.done("extraction")

    # canary exposure: rank of the inserted secret among all candidates (or the skew-normal estimate)
    c = cfg.canaries
    space = 10**c.digits

    def score_batch(idx: np.ndarray) -> np.ndarray:
        return total_nll(model, [canary_ids(tok, candidate_text(c, int(i))) for i in idx], pad)

    canary_rows = []
    rng = np.random.default_rng(seeds["canary_sample"])
    for can in canaries:
        if space <= c.exact_max:
            res = rank_by_enumeration(score_batch, space, can.secret, batch_size=256)
            canary_rows.append({"secret": can.secret, "count": can.count, "method": "exact", "rank": res.rank,
                                "exposure": res.exposure, "score": res.canary_score})
        else:
            sample = rng.choice(space, size=c.sample, replace=False)
            own = float(score_batch(np.array([can.secret]))[0])
            est = skewnorm_exposure(own, score_batch(sample), space_size=space)
            canary_rows.append({"secret": can.secret, "count": can.count, "method": "skewnorm", "rank": None,
                                "exposure": est.exposure, "score": own})
    stages.done("exposure")

    # membership inference and utility: members vs held-out records of the same distribution
    tgt_stats = sequence_stats(model, all_ids, pad, progress=progress)
    texts = [r.text for r in members + held]
    per = [mia_scores(t, r, x, cfg.mia.k) for t, r, x in zip(tgt_stats, ref_stats, texts, strict=True)]
    n = len(members)
    mia = {
        name: asdict(roc_metrics([p[name] for p in per[:n]], [p[name] for p in per[n:]],
                                 n_bootstrap=cfg.mia.bootstrap, seed=seeds["bootstrap"]))
        for name in MIA_SCORES
    }
    utility = {
        "member_nll": mean_nll(tgt_stats[:n]),
        "held_out_nll": mean_nll(tgt_stats[n:]),
        "base_member_nll": mean_nll(ref_stats[:n]),
        "base_held_out_nll": mean_nll(ref_stats[n:]),
    }
    utility |= {k.replace("nll", "ppl"): math.exp(v) for k, v in list(utility.items())}
    stages.done("mia")

    audit_metrics, audit_rows = None, None
    if a is not None:
        audit_tgt = sequence_stats(model, audit_ids, pad, progress=progress)
        scores_a = [mia_scores(t, r, tok.decode(x), cfg.mia.k)[a.score]
                    for t, r, x in zip(audit_tgt, audit_ref, audit_ids, strict=True)]
        bound = audit_bound(included, np.array(scores_a), a.guesses, a.confidence)
        audit_metrics = {"epsilon_lower_bound": bound.epsilon, "guesses": bound.guesses, "correct": bound.correct,
                         "confidence": a.confidence, "score": a.score, "canaries": a.canaries,
                         "included": int(included.sum()), "delta_correction": "none (pure-DP form)"}
        audit_rows = [{"index": i, "included": bool(inc), "score": float(sc), "ids": ids}
                      for i, (inc, sc, ids) in enumerate(zip(included, scores_a, audit_ids, strict=True))]
        stages.done("audit")

    record = {
        "metrics": {
            "extraction": asdict(summary),
            "extraction_by_duplication": by_count,
            "exposure": canary_rows,
            "mia": mia,
            "utility": utility,
            "audit": audit_metrics,
        },
        "outputs": {
            "records": [
                {"id": r.id, "member": True, "duplicates": dup[r.id], "prompt_ids": p, "true_ids": t,
                 "generated_ids": g, "generated_text": gt, "scores": asdict(s)}
                for r, p, t, g, gt, s in zip(members, prompts, truths, generated, gen_texts, scores, strict=True)
            ],
            "mia": [{"id": r.id, "member": i < n, **p} for i, (r, p) in enumerate(zip(members + held, per,
                                                                                      strict=True))],
            "canaries": [asdict(x) for x in canaries],
            "audit": audit_rows,
        },
        "poisoned": {"ids": [s for s in source if s.startswith("canary:")], "training_sources": source,
                     "duplicates": dup},
        "data": {"corpus": corpus.info, "records": rec.info, "n_members": n, "n_held_out": len(held),
                 "held_out_ids": [r.id for r in held], "training_sequences": len(seqs),
                 "embedding_truncated_texts": embedding_cut, "embedding_max_tokens": embedder.max_length},
        "model": lm.info | {"trainable_params": adapted.n_trainable, "total_params": adapted.n_total},
        "train": asdict(log),
        "timings": stages.timings,
        "memory": stages.memory,
    }
    return TaskOutput(record, model)
