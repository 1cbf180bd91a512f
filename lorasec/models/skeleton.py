"""A model as `validate` sees it: its real module names and shapes on the meta device (no weights in memory), its
tokenizer and its position limit, from config.json and the safetensors headers alone.

`lorasec validate` checks a config against this, so what it accepts `run` does not fail on: LoRA targets and rank
against the real layers, max_length against the positions, checkpoint shapes against the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorasec.config import CausalLMConfig, ModelConfig
from lorasec.errors import InputError
from lorasec.models.hub import first_line
from lorasec.models.weights import check_safetensors_dir, minilm_dir, safetensors_shapes

HEADS = ("classifier", "score", "lm_head")  # task heads: new (classifier) or tied (LM), so not compared


@dataclass
class Skeleton:
    model: Any  # torch.nn.Module on the meta device
    tokenizer: Any  # PreTrainedTokenizerBase
    positions: int | None  # longest input the model embeds (None: not stated)
    field: str  # the config field that names the model, for messages


def positions_of(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def classifier_skeleton(cfg: ModelConfig, num_labels: int) -> Skeleton | None:
    """The classifier `cfg` names, on the meta device; None for a hub model not in the local cache (no network)."""
    import torch

    from lorasec.models.classifier import MODELS

    if cfg.name == "tiny-bert":
        with torch.device("meta"):
            clf = MODELS.get("tiny-bert")(cfg, num_labels, 0)
        return Skeleton(clf.model, clf.tokenizer, positions_of(clf.model.config), "model")
    from transformers import AutoModelForSequenceClassification

    folder, field, trust = _folder(cfg)
    if folder is None:
        return None
    return _from_dir(folder, AutoModelForSequenceClassification, field, trust, num_labels=num_labels)


def causal_skeleton(cfg: CausalLMConfig) -> Skeleton | None:
    """The causal LM `cfg` names, on the meta device; None where only a download or the first GGUF conversion
    (smollm2-135m before its cache is built) would tell."""
    import torch

    from lorasec.models.causal import MARKER, SMOLLM2_CACHE, load_causal_lm, smollm2_gguf_path
    from lorasec.paths import cache_dir

    if cfg.name in ("tiny-llama", "tiny-gpt2"):
        with torch.device("meta"):
            lm = load_causal_lm(cfg)
        return Skeleton(lm.model, lm.tokenizer, positions_of(lm.model.config), "model")
    from transformers import AutoModelForCausalLM

    if cfg.name == "smollm2-135m":
        smollm2_gguf_path()  # the package must be there
        cache = cache_dir() / "models" / SMOLLM2_CACHE
        if not (cache / MARKER).is_file():
            return None
        return _from_dir(cache, AutoModelForCausalLM, "model.name", False)
    folder, field, trust = _folder(cfg)
    if folder is None:
        return None
    return _from_dir(folder, AutoModelForCausalLM, field, trust)


def _folder(cfg: Any) -> tuple[Path | None, str, bool]:
    """(weights directory, the field naming it, trust_remote_code) of a minilm, local or hub model config."""
    trust = bool(getattr(cfg, "trust_remote_code", False))
    if cfg.name == "minilm":
        return minilm_dir(), "model.name", False
    if cfg.name == "local":
        return check_safetensors_dir(Path(cfg.path), "model.path"), "model.path", trust
    if cfg.name == "hub":
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(cfg.id, revision=cfg.revision, local_files_only=True))
        except Exception:  # not in the cache: only a download would tell, and validate does not download
            return None, "model.id", trust
        return check_safetensors_dir(folder, "model.id"), "model.id", trust
    raise InputError(f"model.name: no skeleton for {cfg.name!r}")


def _from_dir(folder: Path, auto: Any, field: str, trust: bool, **config_kw: Any) -> Skeleton:
    import torch
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=trust, **config_kw)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=trust)
        with torch.device("meta"):
            model = auto.from_config(config, trust_remote_code=trust)
    except Exception as e:  # noqa: BLE001  (config.json, tokenizer files or custom code: all the user's)
        raise InputError(f"{field}: cannot load {str(folder)!r}: {first_line(e)}") from None
    check_shapes(model, safetensors_shapes(folder, field), field, folder)
    return Skeleton(model, tokenizer, positions_of(config), field)


def check_shapes(model: Any, shapes: dict[str, tuple[int, ...]], field: str, folder: Path) -> None:
    """Every checkpoint tensor that names a parameter of `model` has that parameter's shape, and at least one does
    (weights of another architecture would otherwise load as nothing, leaving a random model)."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    prefix = getattr(model, "base_model_prefix", "") or ""
    matched = 0
    for key, shape in shapes.items():
        name = key.removesuffix(".gamma") + ".weight" if key.endswith(".gamma") else key
        name = name.removesuffix(".beta") + ".bias" if name.endswith(".beta") else name
        hit = next((c for c in (name, f"{prefix}.{name}", name.removeprefix(f"{prefix}.")) if c in own), None)
        if hit is None:
            continue
        matched += 1
        if hit.split(".")[0] in HEADS:
            continue  # a new head is sized by the task; an LM head is tied or checked by transformers
        if own[hit] != shape:
            raise InputError(f"{field}: tensor {key!r} in {str(folder)!r} has shape {list(shape)} but config.json "
                             f"makes it {list(own[hit])}")
    if shapes and not matched:
        raise InputError(f"{field}: none of the {len(shapes)} tensors in {str(folder)!r} is a parameter of the "
                         f"{type(model).__name__} its config.json describes")
