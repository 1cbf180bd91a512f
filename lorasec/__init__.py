"""lorasec: audit the training-time security of fine-tuning methods (full, LoRA, head-only)."""

from lorasec.config import ExperimentConfig, load_config, parse_config

__version__ = "0.1.0"


def run(cfg: ExperimentConfig, progress: bool = True) -> dict:
    """Run one experiment cell and return its result record (not stored; see lorasec.audit.audit)."""
    from lorasec.run import run as _run

    return _run(cfg, progress=progress)


__all__ = ["ExperimentConfig", "load_config", "parse_config", "run", "__version__"]
