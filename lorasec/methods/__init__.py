"""Fine-tuning methods: name -> function(model, config, head names) -> Adapted.

`adapt` decides which parameters train; the optimizer and the NTK both read `Adapted.trainable`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers.pytorch_utils import Conv1D

from lorasec.config import FullMethod, HeadOnlyMethod, LoraMethod, MethodConfig
from lorasec.errors import InputError
from lorasec.registry import Registry
from lorasec.seeds import torch_seeded

METHODS: Registry = Registry("method")

# module-name suffixes of the named target sets, across BERT, Llama and GPT-2 naming
ATTENTION = ("query", "key", "value", "attention.output.dense", "q_proj", "k_proj", "v_proj", "o_proj", "c_attn",
             "attn.c_proj")
QUERY_VALUE = ("query", "value", "q_proj", "v_proj")
HEAD_NAMES = ("classifier", "score", "lm_head")


@dataclass
class Adapted:
    model: nn.Module
    trainable: tuple[str, ...]  # names of the parameters that train, in model.named_parameters() order
    n_trainable: int
    n_total: int


def head_modules(model: nn.Module) -> list[str]:
    """Top-level names of the task head (`classifier` for BERT, `score` / `lm_head` for decoders)."""
    names = [n for n, _ in model.named_children() if n in HEAD_NAMES]
    if not names:
        raise InputError(f"method: cannot find the model's head (looked for {', '.join(HEAD_NAMES)})")
    return names


def _finish(model: nn.Module) -> Adapted:
    trainable = tuple(n for n, p in model.named_parameters() if p.requires_grad)
    params = dict(model.named_parameters())
    return Adapted(model, trainable, sum(params[n].numel() for n in trainable),
                   sum(p.numel() for p in model.parameters()))


@METHODS.register("full")
def full(model: nn.Module, cfg: FullMethod) -> Adapted:
    for p in model.parameters():
        p.requires_grad_(True)
    return _finish(model)


def untie_lm_head(model: nn.Module) -> bool:
    """Give a language model whose output head shares the input embedding matrix (GPT-2, SmolLM2) a head of its
    own, initialised to the same values, so training the head leaves the embeddings as they were. Returns whether
    the head was tied. The untied model computes the same logits until one of the two matrices changes."""
    head = getattr(model, "lm_head", None)
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if head is None or emb is None or head.weight is not emb.weight:
        return False
    head.weight = nn.Parameter(emb.weight.detach().clone())
    if getattr(model, "config", None) is not None:
        model.config.tie_word_embeddings = False  # a save/reload (or tie_weights()) must not tie them again
    return True


@METHODS.register("head_only")
def head_only(model: nn.Module, cfg: HeadOnlyMethod) -> Adapted:
    """Only the output head trains: a classifier's head, or a language model's LM head, untied first from the
    input embeddings where the model shares them, so "head-only" never trains the embeddings."""
    untie_lm_head(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for h in head_modules(model):
        for p in getattr(model, h).parameters():
            p.requires_grad_(True)
    return _finish(model)


def lora_targets(model: nn.Module, cfg: LoraMethod) -> list[str]:
    """Full names of the linear modules that get an adapter under `cfg.targets`."""
    heads = tuple(head_modules(model))
    linear = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D))]
    in_head = [n for n in linear if n.split(".")[0] in heads]
    body = [n for n in linear if n not in in_head]
    if cfg.head == "lora_on_random" and "lm_head" in heads:
        raise InputError("method.head: 'lora_on_random' is for a classifier's random head, not a language model's")
    if cfg.targets == "all-linear":
        chosen = body
    else:
        suffixes = {"attention": ATTENTION, "query-value": QUERY_VALUE}.get(cfg.targets, cfg.targets)  # type: ignore[call-overload]
        chosen = [n for n in body if any(n == s or n.endswith("." + s) for s in suffixes)]
    if not chosen:
        raise InputError(f"method.targets: {cfg.targets!r} matches no linear layer of this model")
    # the paper code's treatment: an adapter on the frozen, randomly initialised head
    return chosen + in_head if cfg.head == "lora_on_random" else chosen


@METHODS.register("lora")
def lora(model: nn.Module, cfg: LoraMethod) -> Adapted:
    # a classifier's head is new and random, so it trains (modules_to_save); a language model's head is
    # pretrained (and often tied to the input embeddings), so LoRA leaves it frozen, as paper 2 does
    task_heads = [h for h in head_modules(model) if h != "lm_head"]
    peft_cfg = LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=lora_targets(model, cfg),
        modules_to_save=task_heads if cfg.head == "train" and task_heads else None, bias="none",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' is_gradient_checkpointing rename, via peft
        wrapped = get_peft_model(model, peft_cfg)
    for layer in (m for m in wrapped.modules() if isinstance(m, LoraLayer)):
        for a in layer.lora_A.values():
            if cfg.init_scale is not None:
                # Var(A) = init_scale / d_in: the paper's sweep axis (peft's kaiming default is 1/3)
                with torch.no_grad():
                    a.weight.normal_(0.0, math.sqrt(cfg.init_scale / a.weight.shape[1]))
            if cfg.freeze_a:
                a.weight.requires_grad_(False)
    return _finish(wrapped)


def adapt(model: nn.Module, cfg: MethodConfig, seed: int) -> Adapted:
    """Set which parameters of `model` train under the method; LoRA wraps the model with peft.

    peft draws A from torch's global generator: seed it here, inside a fork, so the adapters' init depends
    on `seed` alone and not on whatever ran earlier in the process (another cell of a grid, say).
    """
    with torch_seeded(seed):
        return METHODS.get(cfg.kind)(model, cfg)


def lora_a_matrices(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> A weight (r, d_in) of every LoRA layer, for the init-variance checks and M_delta analysis."""
    return {n: p for n, p in model.named_parameters() if "lora_A" in n}


__all__ = ["METHODS", "Adapted", "adapt", "head_modules", "lora_a_matrices", "lora_targets"]
