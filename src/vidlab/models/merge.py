"""Fold a LoRA adapter into its base model: a full native checkpoint that needs no peft to load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vidlab.errors import ModelLoadError
from vidlab.folders import staged_folder
from vidlab.models.load import load_model, resolve_dtype


@dataclass(frozen=True)
class MergeResult:
    """A merged model: the folder, and the base and adapter it came from."""

    folder: Path
    base: str
    adapter: Path


def merge(base: str | Path, adapter: str | Path, out_dir: str | Path, *, dtype: str = "fp32",
          overwrite: bool = False) -> MergeResult:
    """`vidlab model merge`: fold a LoRA adapter into its base and write a full native checkpoint."""
    folder = merge_adapter(base, adapter, out_dir, dtype=dtype, overwrite=overwrite)
    return MergeResult(folder, str(base), Path(adapter))


def merge_adapter(base: str | Path, adapter: str | Path, out_dir: str | Path, dtype: str = "fp32",
                  overwrite: bool = False) -> Path:
    """Write `base` with `adapter` merged into its weights to `out_dir` (complete or not at all).

    Args:
        base: the checkpoint the adapter was trained on (folder or hub id).
        adapter: a PEFT adapter folder (the output of `vidlab train` with method lora / qlora).
        out_dir: new folder for the merged model and the processor.
        dtype: weights' dtype in the merged checkpoint: fp32, bf16 or fp16 (merging happens in fp32).
        overwrite: replace `out_dir` if it holds files.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ModelLoadError(f"{out_dir}: folder exists and is not empty. Choose a new folder or pass --overwrite.")
    model, processor = load_model(base, adapter=adapter, dtype="fp32", device="cpu")
    merged = model.merge_and_unload()
    if dtype != "fp32":
        merged = merged.to(resolve_dtype(dtype, merged.device))
    adapter_processor = Path(adapter) / "processor_config.json"
    if adapter_processor.is_file():  # vidlab train saves the processor it trained with beside the adapter
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(str(adapter))
    with staged_folder(out_dir, label="merging", replace=overwrite) as staging:
        merged.save_pretrained(staging)
        processor.save_pretrained(staging)
    return out_dir
