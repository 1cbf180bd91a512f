"""Greedy continuation of many prompts at once: left padding, KV cache, one `generate` call per batch.

`min_new_tokens = max_new_tokens` masks end-of-sequence until the end, so every record gets exactly
`new_tokens` tokens and batched output can be compared token for token with one-call-per-record output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from lorasec.data.batching import pad, rows_per_batch


@torch.no_grad()
def greedy(model: PreTrainedModel, prompts: Sequence[Sequence[int]], new_tokens: int, pad_id: int,
           batch_size: int = 32, progress: bool = False) -> list[list[int]]:
    """The `new_tokens` greedy continuation of every prompt (prompt tokens not included).

    At most `batch_size` prompts per call, fewer when (rows, prompt + new tokens, vocabulary) float32 logits
    would pass the memory budget of `rows_per_batch`.
    """
    model.eval()
    device = next(model.parameters()).device
    if prompts:
        width = int(model.get_output_embeddings().weight.shape[0])
        batch_size = rows_per_batch(max(len(p) for p in prompts) + new_tokens, width, batch_size)
    out: list[list[int]] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="extract", disable=None if progress else True,
                      leave=False):
        batch = {k: v.to(device) for k, v in pad(prompts[start : start + batch_size], pad_id, "left").items()}
        gen = model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             num_beams=1, pad_token_id=pad_id, use_cache=True)
        out.extend(gen[:, batch["input_ids"].shape[1] :].tolist())  # (B, new_tokens)
    return out
