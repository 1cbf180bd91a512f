"""The theory arm (paper 1, arXiv 2505.12871): empirical NTK, M_Δ spectra and entropy proxies of real fine-tuned
classifiers, beside the robustness the same cell measures.

A theory cell wraps one attacked classification cell. It trains that cell and its clean twin from the same seed
(the classification pipeline itself, so its numbers are the classification cell's), rebuilds the shared
initialisation, and computes on a probe set (clean training rows, their poisoned versions, other clean training
rows, clean and triggered test rows) the kernels at init and after each training, the measured robustness metric
M = ‖ΔΘ − ΔΘ̃‖ / ‖ΔΘ‖ (parameters, effective weights, test logits), its NTK form M′ = ‖mean K(x_c, x̃_c)‖, spectra,
effective rank, matrix Rényi entropy, M_Δ = AᵀA − I per LoRA layer, and the proxies H1′ and H2′.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lorasec.config import Frozen, TaskConfig
from lorasec.tasks.base import TASKS, Task
from lorasec.tasks.classification import TASK as CLASSIFICATION
from lorasec.tasks.classification import ClassificationConfig
from lorasec.tasks.theory.record import TheoryRecord
from lorasec.tasks.theory.table import theory_table


class ProbeConfig(Frozen):
    n_pairs: int = Field(16, ge=1, description="poisoned training rows probed with their clean versions (x_c, x̃_c)")
    n_clean_train: int = Field(16, ge=0, description="other (unpoisoned) training rows probed")
    n_test: int = Field(16, ge=0, description="clean test rows probed, and as many triggered test rows (backdoors)")
    max_length: int | None = Field(None, ge=8, description="tokens per probe; null = the cell's train.max_length")


class TheoryConfig(TaskConfig):
    """One theory cell: an attacked classification cell, its clean twin, and kernels on a probe set."""

    task: Literal["theory"] = Field(description="which research arm")
    cell: ClassificationConfig = Field(description="the attacked classification cell (its seed is this cell's seed)")
    probes: ProbeConfig = Field(default_factory=ProbeConfig, description="the probe inputs of the kernels")
    params: Literal["trainable", "lora", "lora_head", "all"] = Field(
        "trainable", description="parameters the kernel differentiates: what the method trains, LoRA A/B only, "
        "LoRA A/B and the head, or all (the full fine-tuning kernel)")
    alpha: float = Field(2.0, gt=0, description="order of the matrix Rényi entropy (1 = von Neumann)")

    @model_validator(mode="before")
    @classmethod
    def _one_seed(cls, raw: object) -> object:
        """The cell's seed is the theory cell's seed (a grid's `seed:` axis moves both)."""
        if not isinstance(raw, dict) or not isinstance(raw.get("cell"), dict):
            return raw
        seed = raw.get("seed", 1)
        cell = raw["cell"]
        if "seed" in cell and cell["seed"] != seed:
            raise ValueError(f"cell.seed ({cell['seed']}) must equal seed ({seed}); set the seed at the top only")
        return {**raw, "cell": {**cell, "seed": seed}}

    @model_validator(mode="after")
    def _attacked(self) -> TheoryConfig:
        if self.cell.attack.kind == "none":
            raise ValueError("cell.attack: a theory cell compares poisoned with clean training; give an attack")
        if self.params in ("lora", "lora_head") and self.cell.method.kind != "lora":
            raise ValueError(f"params: {self.params!r} needs cell.method.kind 'lora'")
        return self

    def defaults(self) -> dict[str, object]:
        return {"probes.max_length": self.cell.train.max_length}

    def lr(self) -> float:
        return self.cell.lr()

    def label(self) -> str:
        return f"theory: {self.cell.label()}"


def check(cfg: TheoryConfig) -> str:
    return "theory of " + CLASSIFICATION.check(cfg.cell)


TASK = TASKS.add("theory", Task(
    name="theory",
    config=TheoryConfig,
    pipeline="lorasec.tasks.theory.pipeline:run",
    # every classification stage, so the embedded cells get the classification cell's seeds (a seed depends on its
    # position: "probe" keeps the place it had before the classification task appended "defend")
    stages=(*CLASSIFICATION.stages[:5], "probe", *CLASSIFICATION.stages[5:]),
    table=theory_table,
    check=check,
    report="lorasec.tasks.theory.report:sections",
    record=TheoryRecord,
))
