"""Turn a checkpoint reference (a local folder or a Hugging Face hub id) into a local folder."""

from __future__ import annotations

import re
from pathlib import Path

from vidlab.errors import CheckpointConversionError

# What a conversion needs from a hub repository: configs, weights, tokenizer files; not remote code.
CHECKPOINT_FILES = ["*.json", "*.safetensors", "*.bin", "*.txt", "*.model", "*.jinja"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_hub_id(ref: str) -> bool:
    """`name` or `org/name` that is not a path on this machine."""
    return not Path(ref).expanduser().exists() and bool(_HUB_ID.match(ref))


def local_folder(ref: str | Path, what: str, patterns: list[str] | None = None) -> Path:
    """The folder `ref` names, downloaded with huggingface_hub first when it is a hub id.

    Args:
        ref: a folder, or a hub id such as `DAMO-NLP-SG/VideoLLaMA3-2B`.
        what: what the folder is for, named in errors ("checkpoint", "LoRA base", ...).
        patterns: the files to download from the hub (all when None).
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointConversionError(f"{path}: is a file, not a folder ({what}). Pass the folder that holds it.")
    if not is_hub_id(str(ref)):
        raise CheckpointConversionError(f"{ref}: no such folder ({what}). Check the path.")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(ref), allow_patterns=patterns))
    except Exception as err:  # network, auth and cache errors all mean: no local copy to be had here
        raise CheckpointConversionError(
            f"{ref}: not a local folder and not downloadable from the Hugging Face hub here "
            f"({type(err).__name__}: {err}). On a machine with hub access run `hf download {ref} --local-dir DIR`, "
            f"copy DIR here and pass its path ({what})."
        ) from err
