"""The original VideoLLaMA3 checkpoint folders: what kind a folder is, and its config and weights.

Three kinds come out of the original code:
- released: `DAMO-NLP-SG/VideoLLaMA3-*`, remote code for transformers 4.46 (`videollama3_qwen2`),
  `vision_encoder_config` in config.json, keys `model.vision_encoder.*`;
- training: what `videollama3/train.py` saves (or `scripts/convert_hf_checkpoint.py` writes), keys
  `model.vision_encoder.vision_encoder.*`, config.json naming the encoder (`vision_encoder`);
- a LoRA run of train.py: adapter_config.json, adapter_model.*, non_lora_trainables.bin and the
  run's config.json, on top of a base checkpoint of one of the first two kinds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vidlab.errors import CheckpointConversionError
from vidlab.folders import describe_contents
from vidlab.models.convert.weights import WeightFile, find_weight_files
from vidlab.models.hub import local_folder

NATIVE_MODEL_TYPE = "video_llama_3"
NATIVE_MODEL_TYPES = (NATIVE_MODEL_TYPE, "vidlab_video_llama_3")  # the second: with a vidlab video compressor
ORIGINAL_MODEL_TYPES = {"videollama3_qwen2", "videollama3"}
ADAPTER_FILES = ["adapter_model.safetensors", "adapter_model.bin"]
NON_LORA_FILE = "non_lora_trainables.bin"


def read_json(path: Path) -> dict:
    """A JSON object from `path`, or a CheckpointConversionError naming the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointConversionError(
            f"{path}: not readable JSON ({err}). Restore this file from the checkpoint."
        ) from err
    if not isinstance(data, dict):
        raise CheckpointConversionError(
            f"{path}: holds a JSON {type(data).__name__}, not an object. Restore this file."
        )
    return data


def folder_kind(folder: Path) -> str:
    """`adapter`, `original` or `native`; a CheckpointConversionError for anything else."""
    if not folder.is_dir():
        raise CheckpointConversionError(f"{folder}: no such folder. Check the path.")
    if (folder / "adapter_config.json").is_file():
        return "adapter"
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointConversionError(
            f"{folder}: not a VideoLLaMA3 checkpoint (no config.json or adapter_config.json; "
            f"it holds: {describe_contents(folder)}). "
            "Pass the folder of an original VideoLLaMA3 checkpoint or LoRA run."
        )
    model_type = read_json(config_path).get("model_type")
    if model_type in NATIVE_MODEL_TYPES:
        return "native"
    if model_type in ORIGINAL_MODEL_TYPES:
        return "original"
    raise CheckpointConversionError(
        f"{config_path}: model_type is {model_type!r}, not an original VideoLLaMA3 one "
        f"({', '.join(sorted(ORIGINAL_MODEL_TYPES))}). Pass a VideoLLaMA3 checkpoint folder."
    )


@dataclass(frozen=True)
class OriginalCheckpoint:
    """A released or training-code checkpoint folder."""

    folder: Path
    config: dict
    weight_files: list[WeightFile]


def open_original(folder: Path) -> OriginalCheckpoint:
    kind = folder_kind(folder)
    if kind == "native":
        raise CheckpointConversionError(
            f"{folder}: is already a native transformers VideoLLaMA3 checkpoint (model_type "
            f"{read_json(folder / 'config.json').get('model_type')}); "
            "there is nothing to convert. Load it directly (e.g. vidlab chat --model FOLDER)."
        )
    if kind == "adapter":
        raise CheckpointConversionError(
            f"{folder}: is a LoRA run, not a full checkpoint. Pass a released or trained model folder here."
        )
    return OriginalCheckpoint(folder, read_json(folder / "config.json"), find_weight_files(folder))


@dataclass(frozen=True)
class LoraRun:
    """A LoRA run of the original training code."""

    folder: Path
    adapter_config: dict
    adapter_file: WeightFile
    non_lora_file: WeightFile | None
    config: dict | None  # the run's config.json (model.config.save_pretrained), when it was saved

    @property
    def base_reference(self) -> str | None:
        return self.adapter_config.get("base_model_name_or_path")


def open_lora_run(folder: Path) -> LoraRun:
    adapter_config_path = folder / "adapter_config.json"
    adapter_config = read_json(adapter_config_path)
    if adapter_config.get("peft_type", "LORA") != "LORA":
        raise CheckpointConversionError(
            f"{adapter_config_path}: peft_type is {adapter_config.get('peft_type')!r}; only LoRA adapters can be "
            "merged. Convert the base model and load the adapter with peft instead."
        )
    if adapter_config.get("use_dora"):
        raise CheckpointConversionError(
            f"{adapter_config_path}: a DoRA adapter (use_dora true); only plain LoRA is merged. "
            "Merge it with peft's merge_and_unload into an original checkpoint first."
        )
    adapter_paths = [folder / name for name in ADAPTER_FILES if (folder / name).is_file()]
    if not adapter_paths:
        raise CheckpointConversionError(
            f"{folder}: has adapter_config.json but no {' or '.join(ADAPTER_FILES)}. Copy the adapter weights too."
        )
    non_lora = folder / NON_LORA_FILE
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else None
    if config is not None and config.get("model_type") not in ORIGINAL_MODEL_TYPES:
        raise CheckpointConversionError(
            f"{folder / 'config.json'}: model_type is {config.get('model_type')!r}; a LoRA run of the original "
            "VideoLLaMA3 code saves a videollama3_qwen2 config. Pass the run's output folder."
        )
    return LoraRun(
        folder=folder,
        adapter_config=adapter_config,
        adapter_file=WeightFile(adapter_paths[0]),
        non_lora_file=WeightFile(non_lora) if non_lora.is_file() else None,
        config=config,
    )


def vision_encoder_reference(config: dict) -> str | None:
    """The vision encoder a training config names (a folder or hub id), if any."""
    for field in ("vision_encoder", "mm_vision_encoder"):
        value = config.get(field)
        if isinstance(value, str) and value:
            return value
    return None


def vision_encoder_folder(config: dict) -> Path | None:
    """The local folder of the vision encoder the config names (downloading its configs from the hub if it
    is a hub id and the machine can); None when the config names none or it cannot be had."""
    reference = vision_encoder_reference(config)
    if reference is None:
        return None
    try:
        return local_folder(reference, "vision encoder", ["config.json", "preprocessor_config.json"])
    except CheckpointConversionError:
        return None  # the caller says what it needed from it
