"""Numbers derived from kernels and LoRA matrices (numpy only): spectra, effective rank, matrix Rényi entropy,
the spectrum of M_Δ = AᵀA − I, and paper 1's entropy proxies H1′ and H2′.

Conventions. A LoRA `A` is stored by peft as (r, n): r the rank, n = d_in. AᵀA is (n, n) with rank ≤ r, so the
n eigenvalues of M_Δ = (cA)ᵀ(cA) − I are c²s_i² − 1 for the r singular values s_i of A, and −1 repeated n − r
times: the r singular values are the whole spectrum. With iid entries of variance σ², E[AᵀA] = r σ² I, so
E[M_Δ] = (r σ² − 1) I: negative definite for r ≤ n, σ² < 1/n, and 0 at r = n, σ² = 1/n (the paper's statement).
A single draw is NSD only when its largest singular value is ≤ 1, which for Gaussian A needs about
σ (√n + √r) ≤ 1 (Bai–Yin), a stricter condition than σ² < 1/n: the tests show both.
"""

from __future__ import annotations

import math

import numpy as np


def eigenvalues(kernel: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric kernel matrix, descending (tiny negative round-off kept as is)."""
    k = np.asarray(kernel, dtype=np.float64)
    return np.linalg.eigvalsh((k + k.T) / 2)[::-1]


def effective_rank(eigs: np.ndarray) -> float:
    """exp of the Shannon entropy of the normalised eigenvalues (Roy & Vetterli, 2007); 1 ... len(eigs)."""
    lam = np.clip(np.asarray(eigs, dtype=np.float64), 0, None)
    if lam.sum() <= 0:
        return 0.0
    p = lam[lam > 0] / lam.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def normalised(kernel: np.ndarray) -> np.ndarray:
    """A = K_ij / (m sqrt(K_ii K_jj)): unit-diagonal kernel divided by its size, so tr A = 1 (Sánchez Giraldo,
    Rao and Príncipe, 2015, the matrix-based entropy's normalisation)."""
    k = np.asarray(kernel, dtype=np.float64)
    d = np.sqrt(np.clip(np.diag(k), 1e-300, None))
    return k / np.outer(d, d) / len(k)


def renyi_entropy(kernel: np.ndarray, alpha: float = 2.0) -> float:
    """Matrix-based Rényi entropy of order alpha, in bits: 1/(1−α) log2 Σ λ_i(A)^α, A the normalised kernel.
    alpha = 1 is the von Neumann limit −Σ λ log2 λ."""
    lam = np.clip(eigenvalues(normalised(kernel)), 0, None)
    lam = lam / lam.sum()
    if alpha == 1:
        nz = lam[lam > 0]
        return float(-(nz * np.log2(nz)).sum())
    return float(np.log2((lam**alpha).sum()) / (1 - alpha))


def m_delta_spectrum(a: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """All n eigenvalues of M_Δ = (scale·A)ᵀ(scale·A) − I for A of shape (r, n), descending (from the SVD)."""
    a = np.asarray(a, dtype=np.float64)
    r, n = a.shape
    s2 = np.linalg.svd(a, compute_uv=False) ** 2 * scale**2  # min(r, n) values
    eig = np.concatenate([s2 - 1.0, -np.ones(n - len(s2))])
    return np.sort(eig)[::-1]


def m_delta_summary(a: np.ndarray, scale: float = 1.0) -> dict:
    """What a stored result keeps of one layer's M_Δ: r, n, the squared singular values of A (with n, the whole
    spectrum of M_Δ, see the module docstring), and the largest and mean eigenvalue of M_Δ without and with the
    LoRA scaling `scale` (α/r: the B-part of LoRA's kernel is built from (scale·A)ᵀ(scale·A), not AᵀA)."""
    a = np.asarray(a, dtype=np.float64)
    r, n = a.shape
    s2 = np.sort(np.linalg.svd(a, compute_uv=False) ** 2)[::-1]
    out: dict = {"r": r, "n": n, "scale": scale, "sv2": [float(f"{x:.7g}") for x in s2]}
    for tag, c2 in (("", 1.0), ("_scaled", scale**2)):
        top = float(c2 * s2[0] - 1.0)
        out[f"max{tag}"] = top
        out[f"mean{tag}"] = float((c2 * s2.sum() - n) / n)
        out[f"nsd{tag}"] = bool(top <= 0.0)
    return out


def proxies(rank: int, init_scale: float, d: int) -> dict[str, float]:
    """Paper 1's entropy proxies for a LoRA of rank r with Var(A) = σ² = init_scale / d:
    H1′ = log(r · scale) and H2′ = log(d σ⁴ r (r + 2)) (natural log). Full fine-tuning is the point r = d,
    scale = 1 (where M_Δ vanishes in expectation)."""
    sigma2 = init_scale / d
    return {"h1": math.log(rank * init_scale), "h2": math.log(d * sigma2**2 * rank * (rank + 2))}


__all__ = ["effective_rank", "eigenvalues", "m_delta_spectrum", "m_delta_summary", "normalised", "proxies",
           "renyi_entropy"]
