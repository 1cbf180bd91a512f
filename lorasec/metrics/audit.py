"""An empirical lower bound on epsilon from one training run (Steinke, Nasr and Jagielski, NeurIPS 2023).

m audit canaries, each put into the training set with probability 1/2 by an independent coin flip. After
training every canary gets a membership score (higher = "member"); the auditor guesses "in" for the k highest
and "out" for the k lowest and abstains on the rest. If training were epsilon-DP, the number of correct guesses
among the r = 2k made would be stochastically dominated by Binomial(r, e^eps / (1 + e^eps)) (their Theorem 3.1,
the pure-DP case). The bound is the largest epsilon that this binomial can NOT explain at the given confidence:
the eps at which P[Binomial(r, p_eps) >= correct] reaches 1 - confidence, found by bisection.

This is the delta = 0 form. Against an (eps, delta)-DP accountant the bound is for the pure part; Steinke et al.'s
delta > 0 correction (their Theorem 5.2) lowers it slightly and is not applied here, which the report says.
Everything is a function of (included, score) per canary, so a stored cell's bound recomputes from its rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom


@dataclass(frozen=True)
class AuditGuess:
    guesses: int  # r = 2k guesses made (k "in", k "out")
    correct: int  # how many of them are right
    epsilon: float  # the lower bound at `confidence`
    confidence: float


def p_correct(epsilon: float) -> float:
    """The chance that an epsilon-DP mechanism lets one guess be right: e^eps / (1 + e^eps)."""
    return 1.0 / (1.0 + math.exp(-epsilon))


def tail(guesses: int, correct: int, epsilon: float) -> float:
    """P[Binomial(guesses, p_correct(epsilon)) >= correct]."""
    return float(binom.sf(correct - 1, guesses, p_correct(epsilon)))


def epsilon_lower_bound(guesses: int, correct: int, confidence: float = 0.95, hi: float = 50.0,
                        tol: float = 1e-9) -> float:
    """The largest epsilon rejected at `confidence` by `correct` right guesses out of `guesses` (0 if none is)."""
    if not 0 <= correct <= guesses:
        raise ValueError(f"correct guesses must be in 0..{guesses}, got {correct}")
    beta = 1.0 - confidence
    if guesses == 0 or tail(guesses, correct, 0.0) >= beta:
        return 0.0
    lo = 0.0
    while hi - lo > tol:  # tail() rises with epsilon: keep lo where the binomial cannot explain the guesses
        mid = (lo + hi) / 2
        if tail(guesses, correct, mid) < beta:
            lo = mid
        else:
            hi = mid
    return lo


def guess(included: np.ndarray, scores: np.ndarray, k: int) -> tuple[int, int]:
    """(guesses, correct) of the top-k-in / bottom-k-out auditor. Ties are broken by canary index, so the count
    is a function of the stored rows alone."""
    included = np.asarray(included, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    if len(included) != len(scores):
        raise ValueError("one score per canary")
    k = min(k, len(scores) // 2)
    order = np.lexsort((np.arange(len(scores)), -scores))  # highest score first, then lowest index
    top, bottom = order[:k], order[len(order) - k:]
    return 2 * k, int(included[top].sum() + (~included[bottom]).sum())


def audit(included: np.ndarray, scores: np.ndarray, k: int, confidence: float = 0.95) -> AuditGuess:
    """Guess, count and bound in one call."""
    r, v = guess(included, scores, k)
    return AuditGuess(r, v, epsilon_lower_bound(r, v, confidence), confidence)
