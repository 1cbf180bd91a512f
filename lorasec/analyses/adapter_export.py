"""Keep what a cell trained, as safetensors in the cell's artifact directory beside the store.

LoRA: the adapter in peft's own layout (`adapter/adapter_config.json` + `adapter/adapter_model.safetensors`, loadable
by `peft.PeftModel.from_pretrained` on the same base model); full and head-only: the trained parameters as
`trainable.safetensors`; beside them the training log (`train.json`). The record keeps the files' paths relative to
the artifact directory and their sha256, so a reader can check that the files are the ones this cell wrote.
`restore` loads an export back into the same model at its initialisation: the theory arm uses it to read a stored
classification cell's trained model instead of training it again."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Literal

from pydantic import Field

from lorasec.analyses.base import ANALYSES, Analysis, Trained
from lorasec.config import Frozen, LoraMethod

TRAIN_LOG = "train.json"


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
    if trained.train is not None:
        (out / TRAIN_LOG).write_text(json.dumps(trained.train))
    files = sorted(p for p in out.rglob("*") if p.is_file())
    return {"saved": True, "files": {p.relative_to(out).as_posix(): _sha256(p) for p in files}}


def exported(where: Path | None) -> bool:
    """Whether `where` holds a complete export (weights and training log)."""
    return where is not None and (where / TRAIN_LOG).is_file() and (
        (where / "adapter" / "adapter_model.safetensors").is_file() or (where / "trainable.safetensors").is_file())


def restore(model, method, trainable: tuple[str, ...], where: Path) -> dict:
    """Load an export into `model` (the same base model and method at their initialisation, as `adapt` built
    it), so it computes what the trained model computed; returns the stored training log. Safetensors only."""
    from safetensors.torch import load_file

    if isinstance(method, LoraMethod):
        from peft import set_peft_model_state_dict

        state = load_file(where / "adapter" / "adapter_model.safetensors")
        result = set_peft_model_state_dict(model, state)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{where}: adapter keys this model does not have: {result.unexpected_keys[:3]}")
    else:
        state = load_file(where / "trainable.safetensors")
        if set(state) != set(trainable):
            raise ValueError(f"{where}: the exported parameters are not the ones this method trains")
        model.load_state_dict(state, strict=False)
    return json.loads((where / TRAIN_LOG).read_text())


ANALYSES.add("adapter_export", Analysis(AdapterExport, run))
