"""A Hugging Face hub model as a local folder: the one way both classifiers and causal LMs load a hub id.

The snapshot holds only configs, safetensors weights and tokenizer files (pickle weights are never even
downloaded; Python files only when the user trusts remote code), and then loads exactly as a local directory
does, so `name: hub` and `name: local` on the same files behave the same.
"""

from __future__ import annotations

from pathlib import Path

from lorasec.errors import InputError
from lorasec.models.weights import check_safetensors_dir

HUB_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]


def hub_folder(repo_id: str, revision: str | None, trust_remote_code: bool) -> Path:
    """The local snapshot of `repo_id`: from the hub cache with no network when it is there, else downloaded."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
        return check_safetensors_dir(folder, "model.id")
    except (OSError, InputError, ValueError):  # not cached, or only partly
        return check_safetensors_dir(_download(repo_id, revision, trust_remote_code), "model.id")


def _download(repo_id: str, revision: str | None, trust_remote_code: bool) -> Path:
    from huggingface_hub import constants, snapshot_download

    if constants.HF_HUB_OFFLINE:
        raise InputError(
            f"model.id: {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            "download it on a machine with network, or use name: local with a safetensors directory"
        )
    _probe_hub(repo_id)
    patterns = HUB_FILES + (["*.py"] if trust_remote_code else [])
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as e:  # any hub or transport failure (unknown id, revision, network lost midway) is the user's
        raise InputError(f"model.id: cannot download {repo_id!r} ({type(e).__name__}: {first_line(e)})") from None


def _probe_hub(repo_id: str) -> None:
    """Fail in one line, at once, when the hub cannot be reached, instead of after a minute of download retries."""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=10)
    except Exception as e:  # any transport error (DNS, refused, TLS, proxy) means the same thing to the user
        raise InputError(
            f"model.id: cannot reach {constants.ENDPOINT} to download {repo_id!r} ({type(e).__name__}); "
            "this machine may be offline: use an offline model, or name: local with a safetensors directory"
        ) from None


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
