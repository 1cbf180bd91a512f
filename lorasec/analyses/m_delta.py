"""M_Δ = AᵀA − I of every LoRA layer of the trained model (paper 1's entropy argument), without and with the LoRA
scaling α/r: per layer the squared singular values of A and the largest / mean eigenvalue of M_Δ, and over the
cell the share of layers where M_Δ is negative semi-definite. Empty for methods without adapters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lorasec.analyses.base import ANALYSES, Analysis, Trained
from lorasec.config import Frozen, LoraMethod


class MDelta(Frozen):
    kind: Literal["m_delta"] = Field(description="M_Δ = AᵀA − I spectra of each LoRA layer after training")


def layers(model, method) -> dict[str, dict]:
    """M_Δ summary of each LoRA layer's A (see lorasec.metrics.spectra.m_delta_summary); {} without LoRA."""
    from lorasec.methods import lora_a_matrices
    from lorasec.metrics.spectra import m_delta_summary

    if not isinstance(method, LoraMethod):
        return {}
    scale = method.alpha / method.rank
    return {n.replace(".lora_A.default.weight", ""): m_delta_summary(a.detach().double().numpy(), scale)
            for n, a in lora_a_matrices(model).items()}


def summary(per_layer: dict[str, dict]) -> dict | None:
    """Over a cell's LoRA layers: share of layers where M_Δ is NSD, mean largest and mean average eigenvalue."""
    import numpy as np

    if not per_layer:
        return None
    v = list(per_layer.values())
    out = {k: float(np.mean([x[k] for x in v])) for k in ("max", "mean", "max_scaled", "mean_scaled")}
    return out | {f"nsd_share{t}": float(np.mean([x[f"nsd{t}"] for x in v])) for t in ("", "_scaled")}


def run(trained: Trained, cfg: MDelta) -> dict:
    per_layer = layers(trained.model, trained.method)
    return {"summary": summary(per_layer), "layers": per_layer}


ANALYSES.add("m_delta", Analysis(MDelta, run))
