"""What a result records about where it ran: versions, host, device, threads."""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import sys

import torch

PACKAGES = ("lorasec", "torch", "transformers", "peft", "accelerate", "numpy", "scikit-learn", "tokenizers",
            "safetensors", "pydantic")


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "versions": {p: _version(p) for p in PACKAGES},
    }
