"""Keep what a cell trained, as safetensors in the cell's artifact directory beside the store.

LoRA: the adapter in peft's own layout (`adapter/adapter_config.json` + `adapter/adapter_model.safetensors`, loadable
by `peft.PeftModel.from_pretrained` on the same base model); full and head-only: the trained parameters as
`trainable.safetensors`. The record keeps the files' paths relative to the artifact directory and their sha256, so
a reader can check that the files are the ones this cell wrote."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Literal

from pydantic import Field

from lorasec.analyses.base import ANALYSES, Analysis, Trained
from lorasec.config import Frozen, LoraMethod


class AdapterExport(Frozen):
    kind: Literal["adapter_export"] = Field(description="save the trained adapter (PEFT layout) or trained weights")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(trained: Trained, cfg: AdapterExport) -> dict:
    if trained.artifacts is None:
        return {"saved": False, "why": "the cell ran without a store, so there is no artifact directory"}
    out = Path(trained.artifacts)
    if isinstance(trained.method, LoraMethod):
        target = out / "adapter"
        if target.exists():
            shutil.rmtree(target)
        trained.model.save_pretrained(target, safe_serialization=True)
    else:
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        params = dict(trained.model.named_parameters())
        save_file({n: params[n].detach().contiguous() for n in trained.trainable}, out / "trainable.safetensors")
    files = sorted(p for p in out.rglob("*") if p.is_file())
    return {"saved": True, "files": {p.relative_to(out).as_posix(): _sha256(p) for p in files}}


ANALYSES.add("adapter_export", Analysis(AdapterExport, run))
