"""Per-token log-probabilities of sequences under a causal LM: the input of MIA scores, utility and exposure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from lorasec.data.batching import Encoded, collate, rows_per_batch
from lorasec.metrics.mia import token_stats


@dataclass(frozen=True)
class SequenceStats:
    """log p(x_t | x_<t) for t = 1..T-1 and, for Min-K%++, the mean and sd of log p over the vocabulary."""

    logprobs: np.ndarray  # (T-1,)
    mu: np.ndarray | None
    sigma: np.ndarray | None


@torch.no_grad()
def sequence_stats(model: PreTrainedModel, seqs: Sequence[Sequence[int]], pad_id: int, batch_size: int = 16,
                   with_vocab_stats: bool = True, progress: bool = False) -> list[SequenceStats]:
    """Token log-probs (and vocabulary mean/sd per position) of each sequence, batched with right padding.

    At most `batch_size` rows per forward pass, fewer when the (rows, length, vocabulary) logits would pass
    the memory budget of `rows_per_batch`.
    """
    model.eval()
    device = next(model.parameters()).device
    if seqs:
        batch_size = rows_per_batch(max(len(s) for s in seqs), vocab_size(model), batch_size)
    out: list[SequenceStats] = []
    for start in tqdm(range(0, len(seqs), batch_size), desc="score", disable=None if progress else True, leave=False):
        chunk = seqs[start : start + batch_size]
        batch = collate(Encoded([list(s) for s in chunk], 0), None, np.arange(len(chunk)), pad_id)
        ids, mask = batch["input_ids"], batch["attention_mask"]  # (B, T), right padding
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()  # (B, T, V)
        for i, s in enumerate(chunk):
            n = len(s)
            if with_vocab_stats:
                st = token_stats(logits[i, : n - 1], ids[i, 1:n].to(device))
                out.append(SequenceStats(st.logprobs, st.mu, st.sigma))
            else:
                lp = torch.log_softmax(logits[i, : n - 1].double(), -1)
                out.append(SequenceStats(lp.gather(-1, ids[i, 1:n, None].to(device))[:, 0].cpu().numpy(), None, None))
    return out


def total_nll(model: PreTrainedModel, seqs: Sequence[Sequence[int]], pad_id: int, batch_size: int = 256) -> np.ndarray:
    """-sum log p of each sequence (lower = more likely): the score canary candidates are ranked by."""
    stats = sequence_stats(model, seqs, pad_id, batch_size, with_vocab_stats=False)
    return np.array([-s.logprobs.sum() for s in stats])


def vocab_size(model: PreTrainedModel) -> int:
    """Width of the model's output logits."""
    return int(model.get_output_embeddings().weight.shape[0])
