"""Analyses: name -> something computed on a cell's trained model after training (a registry, one file each).

A cell's config lists the analyses it wants (`analyses: [{kind: m_delta}, {kind: adapter_export}]`); each runs
once training is done, on the trained model, and returns a JSON-safe dict stored under the record's
`analyses.<kind>`. An analysis that writes files (a trained adapter) writes them into the cell's artifact
directory beside the store (`<store stem>.artifacts/<cell key>/`), which the engine gives the cell when it runs
against a store; without one it records that nothing was written.

A config is a pydantic model tagged `kind: Literal[name]`; the classification config's `analyses:` field is a list
of the union of every registered one. Importing this package imports no torch.

Adding one: a module here calling `ANALYSES.add(name, Analysis(...))`, and one import line in this file.
"""

from __future__ import annotations

from lorasec.analyses import adapter_export, adapter_features, m_delta  # noqa: F401  (register)
from lorasec.analyses.base import ANALYSES, Analysis, Trained, analysis_union, run_analyses

__all__ = ["ANALYSES", "Analysis", "Trained", "analysis_union", "run_analyses"]
