"""Statistics of a LoRA adapter from its weights alone (issue 33): per adapted module, ΔW = scale · B · A.

The singular values come from the r x r core, never from the d_out x d_in matrix: with B = Q_B R_B and
Aᵀ = Q_A R_A (thin QR), ΔW = scale · Q_B (R_B R_Aᵀ) Q_Aᵀ, so ΔW's non-zero singular values are those of
scale · R_B R_Aᵀ. The entries' kurtosis needs the entries: ΔW is formed a block of rows at a time, so memory stays
at one block. Per module (arXiv 2602.15195's five statistics): leading singular value, Frobenius norm, energy
concentration σ₁² / Σσ², spectral entropy of σ² / Σσ² (nats), excess kurtosis of the entries; and over modules
(arXiv 2605.30189) the spread (coefficient of variation) of the normalised Frobenius norms ||ΔW||_F / sqrt(d_out d_in).

Reads a directory in PEFT's own layout (`adapter_config.json` + `adapter_model.safetensors`); a pickle file
(`adapter_model.bin`, `.pt`) is refused, never loaded.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from lorasec.errors import InputError

STATS = ("sigma_1", "frobenius", "energy_concentration", "spectral_entropy", "kurtosis")
BLOCK_ROWS = 1024


def singular_values(a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """Non-zero-rank singular values of scale · B @ A (A: r x d_in, B: d_out x r), descending, from an r x r core."""
    _, ra = np.linalg.qr(a.T.astype(np.float64))  # Aᵀ = Q_A R_A
    _, rb = np.linalg.qr(b.astype(np.float64))  # B = Q_B R_B
    return np.abs(scale) * np.linalg.svd(rb @ ra.T, compute_uv=False)


def entry_kurtosis(a: np.ndarray, b: np.ndarray, scale: float) -> float:
    """Excess (Fisher) kurtosis of the entries of scale · B @ A, formed BLOCK_ROWS rows at a time; 0 for a constant
    matrix (kurtosis undefined: B = 0 before training)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64) * scale
    n = b64.shape[0] * a64.shape[1]
    s1 = 0.0
    for i in range(0, b64.shape[0], BLOCK_ROWS):
        blk = b64[i:i + BLOCK_ROWS] @ a64
        s1 += blk.sum()
    mean = s1 / n
    m2 = m4 = 0.0
    for i in range(0, b64.shape[0], BLOCK_ROWS):
        d = b64[i:i + BLOCK_ROWS] @ a64 - mean
        d2 = d * d
        m2 += d2.sum()
        m4 += (d2 * d2).sum()
    m2, m4 = m2 / n, m4 / n
    return 0.0 if m2 <= 0 else float(m4 / (m2 * m2) - 3.0)


def module_stats(a: np.ndarray, b: np.ndarray, scale: float) -> dict[str, float]:
    """The five statistics of one module's ΔW, plus its shape and normalised Frobenius norm."""
    s = singular_values(a, b, scale)
    e = s**2
    total = float(e.sum())
    p = e / total if total > 0 else np.zeros_like(e)
    nz = p[p > 0]
    fro = math.sqrt(total)
    d_out, d_in = b.shape[0], a.shape[1]
    return {"sigma_1": float(s[0]) if len(s) else 0.0, "frobenius": fro,
            "energy_concentration": float(p[0]) if total > 0 else 0.0,
            "spectral_entropy": float(-(nz * np.log(nz)).sum()), "kurtosis": entry_kurtosis(a, b, scale),
            "normalised_frobenius": fro / math.sqrt(d_out * d_in), "d_out": d_out, "d_in": d_in,
            "rank": int(a.shape[0])}


def module_type(name: str) -> str:
    """`bert.encoder.layer.3.attention.self.query` -> `attention.self.query`: the name without its layer index."""
    parts = re.split(r"\.\d+\.", name)
    return parts[-1] if len(parts) > 1 else name.rsplit(".", 1)[-1]


def features(modules: dict[str, tuple[np.ndarray, np.ndarray]], scale: float) -> dict:
    """Per module the statistics, per module type their means over layers, and the cross-module spread."""
    per = {n: module_stats(a, b, scale) for n, (a, b) in sorted(modules.items())}
    by_type: dict[str, list[dict]] = {}
    for n, st in per.items():
        by_type.setdefault(module_type(n), []).append(st)
    agg = {t: {k: float(np.mean([s[k] for s in v])) for k in STATS} | {"modules": len(v)}
           for t, v in sorted(by_type.items())}
    norms = np.array([s["normalised_frobenius"] for s in per.values()])
    spread = float(norms.std(ddof=0) / norms.mean()) if len(norms) and norms.mean() > 0 else 0.0
    overall = {k: float(np.mean([s[k] for s in per.values()])) for k in STATS} if per else {}
    return {"modules": per, "by_type": agg, "overall": overall, "frobenius_spread": spread, "scale": scale,
            "n_modules": len(per)}


def vector(feats: dict) -> dict[str, float]:
    """The flat feature vector a classifier reads: the overall means, the spread, and the maximum over modules of
    each statistic (where a backdoor concentrates in a few modules)."""
    mods = list(feats["modules"].values())
    out = {f"mean_{k}": v for k, v in feats["overall"].items()}
    out |= {f"max_{k}": float(max(m[k] for m in mods)) for k in STATS} if mods else {}
    return out | {"frobenius_spread": feats["frobenius_spread"]}


# --- PEFT's on-disk layout ------------------------------------------------------------------------------------

PICKLES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def read_peft_dir(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float, dict]:
    """(module -> (A, B), scale, adapter_config) of a PEFT LoRA directory; safetensors only."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"adapter: {path} is not a directory (expected adapter_config.json and "
                         "adapter_model.safetensors)")
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLES)
    if pickles:
        raise InputError(f"adapter: {path / pickles[0]} is a pickle file; lorasec never loads pickled weights "
                         "(save the adapter with safe_serialization=True)")
    cfg_file, weights = path / "adapter_config.json", path / "adapter_model.safetensors"
    for f in (cfg_file, weights):
        if not f.is_file():
            raise InputError(f"adapter: {path} has no {f.name}")
    cfg = json.loads(cfg_file.read_text())
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise InputError(f"adapter: {path} holds a {cfg.get('peft_type')} adapter; only LoRA is read")
    r, alpha = int(cfg["r"]), float(cfg.get("lora_alpha", cfg["r"]))
    scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    from safetensors.numpy import load_file

    state = load_file(weights)
    modules: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        m = re.match(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$", key)
        if m:
            modules.setdefault(m.group(1), {})[m.group(2)] = value
    pairs = {n: (ab["A"], ab["B"]) for n, ab in modules.items() if "A" in ab and "B" in ab}
    if not pairs:
        raise InputError(f"adapter: {weights} holds no lora_A / lora_B weights")
    return pairs, scale, cfg
