"""lorasec: audit the training-time security of fine-tuning methods (full, LoRA, head-only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lorasec.config import TaskConfig
from lorasec.tasks import load_config, parse_config
from lorasec.tasks.classification import ClassificationConfig

if TYPE_CHECKING:
    from lorasec.audit import Run

__version__ = "0.1.0"

ExperimentConfig = ClassificationConfig  # the classification config's earlier name


def run(cfg: TaskConfig, progress: bool = True, keep_model: bool = False) -> Run:
    """Run one cell of any task, not stored (see lorasec.audit.audit): `.record` and, with keep_model, `.model`."""
    from lorasec.audit import execute

    return execute(cfg, progress=progress, keep_model=keep_model)


__all__ = ["ClassificationConfig", "ExperimentConfig", "TaskConfig", "load_config", "parse_config", "run",
           "__version__"]
