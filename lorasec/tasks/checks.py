"""What `validate` checks of a config against its real model (on the meta device: no weights loaded), shared by
every task's `check`: input lengths against the model's positions, the tokenizer against the embeddings, and the
method against the real layers (LoRA target names that match nothing, a rank above a targeted layer's width)."""

from __future__ import annotations

from typing import Any

from lorasec.config import LoraMethod, MethodConfig
from lorasec.errors import InputError
from lorasec.models.skeleton import Skeleton


def check_fits(sk: Skeleton, method: MethodConfig, lengths: dict[str, int]) -> None:
    """`lengths`: config field -> tokens per row it asks for (`train.max_length`, ...)."""
    for field, n in lengths.items():
        if sk.positions is not None and n > sk.positions:
            raise InputError(f"{field}: {n} is more than the {sk.positions} positions the model embeds")
    embed = sk.model.get_input_embeddings()
    if embed is not None and len(sk.tokenizer) > embed.num_embeddings:
        raise InputError(f"{sk.field}: the tokenizer has {len(sk.tokenizer)} tokens but the model embeds only "
                         f"{embed.num_embeddings}")
    check_method(sk.model, method)


def check_method(model: Any, method: MethodConfig) -> None:
    """What `adapt` would refuse, and what it would accept but fail on later, found on the meta model."""
    from lorasec.methods import head_modules, lora_targets

    if method.kind == "full":
        return
    head_modules(model)
    if not isinstance(method, LoraMethod):
        return
    if not isinstance(method.targets, str):
        body = [n for n, m in model.named_modules() if hasattr(m, "weight") and getattr(m.weight, "ndim", 0) == 2
                and n.split(".")[0] not in ("classifier", "score", "lm_head")]
        for suffix in method.targets:
            if not any(n == suffix or n.endswith("." + suffix) for n in body):
                examples = sorted({n.rsplit(".", 1)[-1] for n in body})[:8]
                raise InputError(f"method.targets: {suffix!r} matches no linear layer of this model "
                                 f"(its layer names end in: {', '.join(examples)})")
    heads = set(head_modules(model))
    for name in lora_targets(model, method):
        if name.split(".")[0] in heads:
            continue  # 'lora_on_random' on a small head: the paper code's setting, rank above its width included
        weight = model.get_submodule(name).weight
        width = min(int(d) for d in weight.shape)
        if method.rank > width:
            raise InputError(f"method.rank: {method.rank} is more than min(d_in, d_out) = {width} of the targeted "
                             f"layer {name!r}")
