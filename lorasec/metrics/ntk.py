"""Empirical neural tangent kernel of a classifier's logits: K(x, x') = J(x) J(x')ᵀ over a chosen parameter set.

`entk` is the vectorised form (torch.func: functional_call + vmap over inputs + jacrev over parameters), tiled
over inputs and over parameter chunks; `entk_loop` is the brute-force reference (one torch.autograd.grad per
input and logit, each input run alone and unpadded). Both return K as (n, n, C, C): K[i, j, a, b] =
<d logit_a(x_i) / d theta, d logit_b(x_j) / d theta>.

Which contraction, and why. There are n*C outputs (64 probes x 2 classes = 128) and P parameters (LoRA r8 on
MiniLM: 0.34M; full MiniLM: 22.7M), so n*C << P always. The Jacobian contraction (form J, then J Jᵀ) computes each
per-sample Jacobian once: C vector-Jacobian products per input, batched by vmap, and one matmul. The NTK-vector
product form (vjp then jvp, torch.func tutorial) avoids holding J but pays a jvp through the whole probe batch
for each of the n*C vjp rows, i.e. n times more network work; it only pays off when C is large or P does not
fit even in chunks. So we contract Jacobians, and bound memory by chunking the parameters instead:
- LoRA / LoRA + head / head-only: J (n*C*P*4 bytes: 173 MB for LoRA r8 on MiniLM) fits the budget, one chunk,
  one forward + backward over the probes.
- Full fine-tuning: J would be 11.6 GB at n=64, so the parameters are cut into chunks of at most
  `budget_mb / (4 n C)` columns (a large tensor split by rows), K = sum over chunks of J_g J_gᵀ. Each chunk
  reruns the forward and backward (recompute for memory). The word-embedding matrix (half of MiniLM) gets a
  gradient only on the rows of tokens that occur in the probes, so only those rows are differentiated: the other
  rows' Jacobian columns are exactly zero and add nothing to K.
Inputs are tiled too, sorted by length and cut into tiles of at most `tile_inputs` probes and `tile_tokens`
padded tokens (64 and 512 by default: short probes share a tile, long ones get small tiles, so padding stays
~20% over the real tokens and each vmap call is a few big matmuls), so activation memory stays bounded as n
grows. The word embedding enters through `inputs_embeds` looked up in the used-row table, so no cotangent of the
full vocabulary table is ever formed (that took the full MiniLM kernel from 7.4 GB to 1.5 GB peak, BENCHMARKS.md).
K = J Jᵀ is contracted with float32 products over blocks of columns summed in float64 (7.6e-8 relative to a
float64 product, and no float64 copy of J).

Padding: the probes are padded to one length for vmap, with a 4-D additive attention mask (transformers returns
a 4-D mask as is; building it from a 2-D mask branches on data, which vmap cannot trace). The eager attention is
used while computing the kernel (the CPU SDPA kernel has no vmap batching rule). The reference runs each input
alone, unpadded, with the model's own attention, so a test of equality also checks both of these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap
from transformers import PreTrainedTokenizerBase

from lorasec.data.batching import encode, pad
from lorasec.errors import InputError

PARAM_SETS = ("trainable", "lora", "lora_head", "all")
TILE_INPUTS, TILE_TOKENS = 64, 512  # entk's default tile limits: probes and padded tokens per vmap call


@dataclass
class Probes:
    """Token ids of the probe inputs, right-padded to one length: (n, T) ids and (n, T) 0/1 mask."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def tile(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inputs `idx` as one batch, cut to the longest of them (right padding keeps every token)."""
        width = int(self.attention_mask[idx].sum(1).max())
        return {"input_ids": self.input_ids[idx, :width], "attention_mask": self.attention_mask[idx, :width]}

    def row(self, i: int) -> dict[str, torch.Tensor]:
        """Input i alone, unpadded, as a batch of one."""
        n = int(self.attention_mask[i].sum())
        return {"input_ids": self.input_ids[i : i + 1, :n], "attention_mask": self.attention_mask[i : i + 1, :n]}


def encode_probes(tokenizer: PreTrainedTokenizerBase, texts: list[str] | tuple[str, ...], max_length: int) -> Probes:
    """Tokenise the probe texts as training does (same truncation), padded right."""
    enc = encode(tokenizer, texts, max_length)
    out = pad(enc.input_ids, tokenizer.pad_token_id, "right")
    return Probes(out["input_ids"], out["attention_mask"])


def param_names(model: nn.Module, which: str) -> list[str]:
    """Names of the parameters the kernel differentiates, in `named_parameters()` order.

    'trainable': what the method trains (requires_grad); 'lora': LoRA A and B only; 'lora_head': LoRA A/B and
    the trained head (peft's modules_to_save copy); 'all': every parameter (the full fine-tuning kernel).
    """
    named = list(model.named_parameters())
    if which == "all":
        return [n for n, _ in named]
    if which == "trainable":
        return [n for n, p in named if p.requires_grad]
    lora = [n for n, _ in named if ".lora_A." in n or ".lora_B." in n]
    if not lora:
        raise InputError(f"params: {which!r} needs a LoRA model; this model has no LoRA adapters")
    if which == "lora":
        return lora
    if which == "lora_head":
        head = [n for n, _ in named if "modules_to_save" in n]
        return [n for n, _ in named if n in set(lora) | set(head)]
    raise InputError(f"params: unknown parameter set {which!r}; choose one of {', '.join(PARAM_SETS)}")


def _transformer(model: nn.Module) -> nn.Module:
    """The transformers PreTrainedModel inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run the model with eager attention inside the block (vmap has no batching rule for CPU SDPA)."""
    config = getattr(_transformer(model), "config", None)
    before = getattr(config, "_attn_implementation", None)
    if config is None or before is None:
        yield
        return
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = before


@dataclass(frozen=True)
class Chunk:
    """One slice of the differentiated parameters: rows `rows` (None: all) of each named tensor."""

    parts: tuple[tuple[str, torch.Tensor | None], ...]

    def numel(self, params: dict[str, torch.Tensor]) -> int:
        return sum(params[n][0].numel() * (len(r) if r is not None else params[n].shape[0]) for n, r in self.parts)


def plan_chunks(model: nn.Module, names: list[str], probes: Probes, n_outputs: int, budget_mb: float,
                embed_rows: bool = True) -> list[Chunk]:
    """Cut the parameters into chunks whose Jacobian, (n_outputs, columns) float32, stays within `budget_mb`.

    A tensor larger than the budget is split by rows. With `embed_rows`, the input embedding matrix is
    restricted to the rows of tokens present in the probes (the only rows with a non-zero gradient).
    """
    params = dict(model.named_parameters())
    cols = max(1, int(budget_mb * 2**20 // (4 * n_outputs)))
    emb = _transformer(model).get_input_embeddings() if hasattr(_transformer(model), "get_input_embeddings") else None
    emb_weight = emb.weight if isinstance(emb, nn.Embedding) else None
    used = torch.unique(probes.input_ids[probes.attention_mask.bool()])
    chunks: list[Chunk] = []
    current: list[tuple[str, torch.Tensor | None]] = []
    size = 0
    for name in names:
        p = params[name]
        rows = used if embed_rows and emb_weight is not None and p is emb_weight else None
        n_rows = len(rows) if rows is not None else (p.shape[0] if p.dim() else 1)
        row_numel = p[0].numel() if p.dim() else 1
        if n_rows * row_numel <= cols:  # the whole tensor (or its used rows) in one piece
            if size + n_rows * row_numel > cols and current:
                chunks.append(Chunk(tuple(current)))
                current, size = [], 0
            current.append((name, rows))
            size += n_rows * row_numel
            continue
        index = rows if rows is not None else torch.arange(n_rows)
        step = max(1, cols // row_numel)
        for start in range(0, n_rows, step):
            if current:
                chunks.append(Chunk(tuple(current)))
                current, size = [], 0
            piece = index[start : start + step]
            current.append((name, piece))
            size = len(piece) * row_numel
    if current:
        chunks.append(Chunk(tuple(current)))
    return chunks


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(T,) 0/1 -> (1, 1, 1, T): 0 where attended, the dtype's minimum on padding (added to the scores)."""
    return ((1.0 - mask.to(dtype)) * torch.finfo(dtype).min)[None, None, None, :]


def _embedding_name(model: nn.Module) -> str | None:
    """Name of the input word-embedding matrix among the model's parameters (None if there is none)."""
    inner = _transformer(model)
    emb = inner.get_input_embeddings() if hasattr(inner, "get_input_embeddings") else None
    if not isinstance(emb, nn.Embedding):
        return None
    return next((n for n, p in model.named_parameters() if p is emb.weight), None)


def length_tiles(probes: Probes, tile_inputs: int, tile_tokens: int | None = None) -> list[torch.Tensor]:
    """Probe indices sorted by length and cut into tiles of at most `tile_inputs` probes and (if set) at most
    `tile_tokens` padded tokens, so each tile pads only to its own longest probe and short probes share a tile."""
    lengths = probes.attention_mask.sum(1)
    tiles: list[list[int]] = []
    for i in torch.argsort(lengths, stable=True).tolist():
        size = len(tiles[-1]) if tiles else tile_inputs
        if size >= tile_inputs or (tile_tokens is not None and (size + 1) * int(lengths[i]) > tile_tokens):
            tiles.append([])
        tiles[-1].append(i)
    return [torch.tensor(t) for t in tiles]


def _chunk_jacobian(model: nn.Module, chunk: Chunk, probes: Probes, tiles: list[torch.Tensor], embed: str | None,
                    used: torch.Tensor) -> torch.Tensor:
    """(n, C, columns) Jacobian of the logits w.r.t. the chunk's parameters, over length-sorted input tiles.

    With `embed` (the word-embedding name, its rows restricted to `used`, the probes' tokens), the embedding
    enters as `inputs_embeds` looked up in the small used-row table: a cotangent the size of the full
    vocabulary table per input and logit (47 MB each for MiniLM) is never formed.
    """
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    dtype = next(iter(params.values())).dtype
    wrt = {n: (params[n] if r is None else params[n][r]) for n, r in chunk.parts}
    rows = {n: r for n, r in chunk.parts}
    small = embed if embed in rows else None
    if small is not None:
        local = torch.full((params[small].shape[0],), -1, dtype=torch.long)
        local[used] = torch.arange(len(used))  # vocabulary id -> row of the used-row table
        table0 = params[small][used]
        at = torch.searchsorted(used, rows[small])  # the chunk's rows inside the used-row table

    def logits(theta: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        full = dict(params)
        for n, v in theta.items():
            if n != small:
                full[n] = v if rows[n] is None else params[n].index_copy(0, rows[n], v)
        kwargs = {"attention_mask": _additive_mask(mask, dtype)}
        if small is None:
            kwargs["input_ids"] = ids[None]
        else:
            kwargs["inputs_embeds"] = table0.index_copy(0, at, theta[small])[local[ids]][None]
        return functional_call(model, (full, buffers), args=(), kwargs=kwargs).logits[0]  # (C,)

    per_sample = vmap(jacrev(logits), in_dims=(None, 0, 0))
    out: torch.Tensor | None = None
    for tile in tiles:
        batch = probes.tile(tile)
        jac = per_sample(wrt, batch["input_ids"], batch["attention_mask"])
        flat_jac = torch.cat([jac[n].flatten(2) for n, _ in chunk.parts], dim=2)  # (t, C, columns)
        del jac
        if out is None:
            out = torch.empty(len(probes), *flat_jac.shape[1:], dtype=flat_jac.dtype)
        out.index_copy_(0, tile, flat_jac)  # a row copy (advanced-index assignment took 20% of the kernel's time)
    assert out is not None
    return out


def _contract(jac: torch.Tensor, kernel: torch.Tensor, block: int = 65536) -> None:
    """kernel (n C, n C) float64 += J Jᵀ for J = jac (n, C, p) float32.

    Products in float32 over blocks of `block` columns, summed in float64: 7.6e-8 relative (Frobenius) to a
    float64 product on the MiniLM LoRA kernel, and 5x faster (a float64 copy of J is never made).
    """
    flat = jac.reshape(-1, jac.shape[2])
    for start in range(0, flat.shape[1], block):
        part = flat[:, start : start + block]
        kernel += (part @ part.T).double()


def entk(model: nn.Module, probes: Probes, names: list[str], tile_inputs: int | None = TILE_INPUTS,
         tile_tokens: int | None = TILE_TOKENS, budget_mb: float = 512.0, embed_rows: bool = True) -> torch.Tensor:
    """(n, n, C, C) empirical NTK of the logits over the parameters `names`, in float64.

    `tile_inputs` / `tile_tokens`: most probes / padded tokens per vmap call, probes grouped by length (None: no
    limit); `budget_mb`: most memory one Jacobian chunk (n x C x columns, float32) may take. Results do not
    depend on any of them.
    """
    model.eval()
    n = len(probes)
    with torch.no_grad():
        n_classes = model(**probes.row(0)).logits.shape[-1]
    chunks = plan_chunks(model, names, probes, n * n_classes, budget_mb, embed_rows)
    embed = _embedding_name(model) if embed_rows else None
    used = torch.unique(probes.input_ids[probes.attention_mask.bool()])
    tiles = length_tiles(probes, tile_inputs or n, tile_tokens)
    kernel = torch.zeros(n * n_classes, n * n_classes, dtype=torch.float64)
    with eager_attention(model):
        for chunk in chunks:
            jac = _chunk_jacobian(model, chunk, probes, tiles, embed, used)  # (n, C, p) float32
            _contract(jac, kernel)
            del jac
    return unflat(kernel, n)


def entk_loop(model: nn.Module, probes: Probes, names: list[str]) -> torch.Tensor:
    """The reference: one autograd.grad per input and logit (each input alone, unpadded), then J Jᵀ."""
    model.eval()
    params = dict(model.named_parameters())
    wrt = [params[n] for n in names]
    flags = [p.requires_grad for p in wrt]
    for p in wrt:
        p.requires_grad_(True)
    rows = []
    try:
        for i in range(len(probes)):
            out = model(**probes.row(i)).logits[0]
            for c in range(out.shape[0]):
                grads = torch.autograd.grad(out[c], wrt, retain_graph=c + 1 < out.shape[0], allow_unused=True)
                rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                       for g, p in zip(grads, wrt, strict=True)]).double())
    finally:
        for p, f in zip(wrt, flags, strict=True):
            p.requires_grad_(f)
    jac = torch.stack(rows)  # (n C, P)
    return unflat(jac @ jac.T, len(probes))


def unflat(kernel: torch.Tensor, n: int) -> torch.Tensor:
    """(n C, n C), rows ordered (input, class) -> (n, n, C, C): the inverse of `flat`."""
    c = kernel.shape[0] // n
    return kernel.reshape(n, c, n, c).permute(0, 2, 1, 3).contiguous()


def flat(kernel: torch.Tensor) -> torch.Tensor:
    """(n, n, C, C) -> (n C, n C), rows ordered (input, class)."""
    n, _, c, _ = kernel.shape
    return kernel.permute(0, 2, 1, 3).reshape(n * c, n * c)


def parameter_count(model: nn.Module, names: list[str]) -> int:
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in names)


__all__ = ["PARAM_SETS", "TILE_INPUTS", "TILE_TOKENS", "Chunk", "Probes", "encode_probes", "entk", "entk_loop",
           "flat", "length_tiles", "param_names", "parameter_count", "plan_chunks", "unflat"]
