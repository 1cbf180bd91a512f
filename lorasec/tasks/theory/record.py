"""The stored record of a theory cell (see lorasec.tasks.records)."""

from __future__ import annotations

from typing import Any

from lorasec.tasks.records import Envelope, Open, Shape


class KernelNumbers(Shape):
    m_prime: float | None
    m_prime_rel: float | None
    trace_per_input: float
    effective_rank: float
    renyi: float


class Metrics(Shape):
    cacc: float
    cacc_clean: float
    delta_cacc: float
    asr: float | None
    m_params: float
    m_weights: float
    m_function: float
    kernel: dict[str, KernelNumbers]  # init, clean, poisoned
    m_delta: dict[str, dict[str, float] | None]
    proxies: dict[str, float] | None


class Cell(Open):
    key: str
    metrics: dict[str, Any]


class TheoryResult(Shape):
    metrics: Metrics
    kernels: dict[str, Any]  # shape, params, n_params and the (n, n, C, C) matrices at init / clean / poisoned
    spectra: dict[str, list[float]]
    m_delta: dict[str, dict[str, Any]]
    probes: dict[str, Any]
    cells: dict[str, Cell]
    model: Open
    train: dict[str, Any]
    data: Open
    timings: dict[str, float]
    memory: dict[str, dict[str, float | None]]


class TheoryRecord(TheoryResult, Envelope):
    """A stored theory row."""
