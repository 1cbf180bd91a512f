"""Weight-only statistics of a trained LoRA adapter (issue 33): per adapted module, the singular values of
ΔW = scale · B · A from an r x r core and the entries' kurtosis (lorasec.metrics.adapter_weights), aggregated by
module type, and the flat vector a detector reads. Stored with the cell, so a bank of adapters is a sweep whose
store holds each adapter's features beside what it was trained on (clean or which attack). Empty without LoRA."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lorasec.analyses.base import ANALYSES, Analysis, Trained
from lorasec.config import Frozen, LoraMethod


class AdapterFeatures(Frozen):
    kind: Literal["adapter_features"] = Field(description="weight-only statistics of each LoRA module's update")


def lora_pairs(model) -> tuple[dict, float]:
    """module name -> (A, B) as numpy, and the scale, of every LoRA layer of a peft model."""
    from peft.tuners.lora import LoraLayer

    pairs, scales = {}, set()
    for name, mod in model.named_modules():
        if isinstance(mod, LoraLayer) and "default" in mod.lora_A:
            a = mod.lora_A["default"].weight.detach().float().cpu().numpy()
            b = mod.lora_B["default"].weight.detach().float().cpu().numpy()
            pairs[name.removeprefix("base_model.model.")] = (a, b)
            scales.add(float(mod.scaling["default"]))
    if len(scales) > 1:
        raise ValueError(f"adapter_features: LoRA layers with different scales {sorted(scales)}")
    return pairs, scales.pop() if scales else 1.0


def run(trained: Trained, cfg: AdapterFeatures) -> dict:
    from lorasec.metrics.adapter_weights import features, vector

    if not isinstance(trained.method, LoraMethod):
        return {}
    pairs, scale = lora_pairs(trained.model)
    feats = features(pairs, scale)
    return feats | {"vector": vector(feats)}


ANALYSES.add("adapter_features", Analysis(AdapterFeatures, run))
