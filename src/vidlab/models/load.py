"""Load a native transformers VideoLLaMA3 checkpoint (folder or hub id), optionally with an adapter."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoProcessor, VideoLlama3ForConditionalGeneration

from vidlab.errors import ModelLoadError
from vidlab.folders import describe_contents

NATIVE_MODEL_TYPE = "video_llama_3"
ORIGINAL_MODEL_TYPES = {"videollama3_qwen2", "videollama3"}
DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
          "fp32": torch.float32, "float32": torch.float32}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` is the first CUDA GPU when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device} was asked for but no CUDA GPU is visible. Use --device cpu.")
    return device


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """`auto` is bf16 on a GPU that supports it, else fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}. Use auto, bf16, fp16 or fp32.")
    return DTYPES[dtype]


def looks_local(path_or_id: str) -> bool:
    # A hub id is "name" or "org/name"; anything else (./x, /x, a/b/c, x\\y) is a path.
    return Path(path_or_id).exists() or path_or_id.startswith((".", "/", "~")) or path_or_id.count("/") > 1


def check_model_folder(folder: Path) -> None:
    """Raise a ModelLoadError saying what is wrong with a local checkpoint folder, if anything."""
    if not folder.exists():
        raise ModelLoadError(f"{folder}: no such model folder. Check the path, or build one with `vidlab model tiny`.")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(
            f"{folder}: not a model folder (no config.json; it holds: {describe_contents(folder)}). "
            "Point --model at a VideoLLaMA3 checkpoint folder."
        )
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{config_path}: not valid JSON ({err}). Restore the checkpoint's config.") from err
    if model_type in ORIGINAL_MODEL_TYPES:
        raise ModelLoadError(
            f"{folder}: is in the original VideoLLaMA3 remote-code format ({model_type}). "
            f"Convert it first: vidlab model convert {folder} {folder}-hf"
        )
    if model_type != NATIVE_MODEL_TYPE:
        raise ModelLoadError(
            f"{folder}: model_type is {model_type!r}, not {NATIVE_MODEL_TYPE!r}. vidlab loads VideoLLaMA3 checkpoints."
        )


@contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around peft calls that wrap a model: peft (0.21) reads transformers' deprecated
    `is_gradient_checkpointing` alias, a FutureWarning the user can do nothing about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def _load_adapter(model: torch.nn.Module, adapter: str | Path) -> torch.nn.Module:
    from peft import PeftModel

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise ModelLoadError(
            f"{adapter}: not a PEFT adapter folder (no adapter_config.json). "
            "Pass the output folder of `vidlab train` (or any peft save_pretrained folder)."
        )
    with peft_wrapping():
        return PeftModel.from_pretrained(model, str(adapter))


def load_model(
    path_or_id: str | Path,
    adapter: str | Path | None = None,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device = "auto",
    attn_implementation: str | None = None,
):
    """Load a native VideoLLaMA3 model and its processor.

    Args:
        path_or_id: a local checkpoint folder or a hub id (downloaded when the machine can).
        adapter: a PEFT adapter folder to put on top (LoRA from `vidlab train`).
        dtype: auto (bf16 on a GPU that has it, else fp32), bf16, fp16 or fp32.
        device: auto (CUDA if present, else CPU), cpu, cuda, cuda:1, ...
        attn_implementation: passed to transformers (eager, sdpa, flash_attention_2); None picks.

    Returns:
        (model, processor), the model in eval mode on `device`.
    """
    source = str(path_or_id)
    if looks_local(source):
        check_model_folder(Path(source).expanduser())
        source = str(Path(source).expanduser())
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        model = VideoLlama3ForConditionalGeneration.from_pretrained(
            source, dtype=torch_dtype, device_map=str(device), attn_implementation=attn_implementation
        )
        processor = AutoProcessor.from_pretrained(source)
    except OSError as err:
        raise ModelLoadError(
            f"{source}: could not load the model ({err}). Pass a local checkpoint folder, or a hub id on a "
            "machine that can reach the hub."
        ) from err
    if adapter is not None:
        model = _load_adapter(model, adapter)
    model.eval()
    return model, processor
