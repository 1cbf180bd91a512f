"""lorasec: audit the training-time security of fine-tuning methods (full, LoRA, head-only)."""

from lorasec.config import ExperimentConfig, load_config, parse_config

__version__ = "0.1.0"


def run(cfg: ExperimentConfig, progress: bool = True) -> dict:
    """Run one experiment cell of either arm and return its result record (not stored; see lorasec.audit.audit)."""
    from lorasec.audit import execute

    return execute(cfg, progress=progress)


__all__ = ["ExperimentConfig", "load_config", "parse_config", "run", "__version__"]
