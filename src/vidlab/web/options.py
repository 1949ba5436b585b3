"""How the page is served: address, folders, limits. One typed object; `vidlab web` builds it from its options."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from vidlab.errors import VidlabError
from vidlab.settings import GenerationOptions, MediaSettings


class WebOptions(BaseModel):
    """Everything about the page but the model behind it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 lets other machines in: there is no "
                      "login, so only on a network you trust).")
    port: int | None = Field(None, ge=0, le=65535, description="Port (none: 7860, or the next free one).")
    runs: Path | None = Field(None, description="Folder searched for eval run and eval compare folders (Results tab).")
    media_root: Path | None = Field(None, description="Folder whose videos and images the page lists to pick from.")
    max_upload_mb: float = Field(200.0, gt=0, allow_inf_nan=False, description="Largest upload, in MiB.")
    max_video_seconds: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Longest video the page accepts, in seconds (none: any)."
    )
    temp_dir: Path | None = Field(
        None, description="Where uploads, frames and copies are kept while the page runs (none: a new temporary "
        "folder, removed when the page stops). Nothing is written anywhere else.",
    )
    media: MediaSettings = Field(
        default_factory=MediaSettings, description="The frame and DiffFP settings the page starts with (each tab can "
        "change them).",
    )
    generation: GenerationOptions = Field(
        default_factory=GenerationOptions, description="The decoding settings the page starts with."
    )


def quickstart_paths(folder: Path) -> dict:
    """What a quickstart folder holds for the page: base model, LoRA adapter, evaluations, test videos."""
    if not (folder / "quickstart.json").is_file():
        raise VidlabError(f"--quickstart {folder}: not a quickstart folder (no quickstart.json). Run `vidlab "
                          f"quickstart --out {folder}` first, or give --model and --runs yourself.")
    return {"model": folder / "runs" / "base", "adapters": {"tuned": folder / "runs" / "lora"},
            "runs": folder / "eval", "media_root": folder / "data" / "videos",
            "media": MediaSettings(compression=False)}  # the quickstart trains and evaluates without DiffFP
