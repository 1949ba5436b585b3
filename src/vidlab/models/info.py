"""What a checkpoint folder holds: format, parameters per part, dtype, token ids, processor settings.

Read from the config files and the weight files' headers only, so it is quick on a 7B checkpoint.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from vidlab.errors import CheckpointConversionError, ModelLoadError
from vidlab.models.convert.keymap import (
    canonical_key,
    is_derived_buffer,
    is_training_key,
    native_key,
    part_of,
    strip_peft_names,
)
from vidlab.models.convert.original import NON_LORA_FILE, folder_kind, open_lora_run, read_json
from vidlab.models.convert.weights import TensorInfo, WeightFile, find_weight_files
from vidlab.models.template import IMAGE_TOKEN, VIDEO_TOKEN
from vidlab.settings import VideoCompressor

PARTS = ("vision", "projector", "llm")


def _count(tables: list[dict[str, TensorInfo]], to_native: Callable[[str], str | None]) -> tuple[dict, dict]:
    """Parameters per part and per dtype over the tensors (name -> info, per file) that map to a native name."""
    parts: Counter = Counter({part: 0 for part in PARTS})
    dtypes: Counter = Counter()
    for table in tables:
        for key, info in table.items():
            native = to_native(key)
            if native is None or is_derived_buffer(key):
                continue
            parts[part_of(native)] += info.numel
            dtypes[info.dtype] += info.numel
    return {**parts, "total": sum(parts.values())}, dict(dtypes.most_common())


def _tables(files: list[WeightFile]) -> list[dict[str, TensorInfo]]:
    return [weight_file.infos() for weight_file in files]


def _added_tokens(folder: Path) -> dict[str, int]:
    """Special tokens by name, from tokenizer.json (no tokenizer load)."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return {}
    try:
        return {t["content"]: t["id"] for t in json.loads(path.read_text()).get("added_tokens", [])}
    except (json.JSONDecodeError, KeyError, TypeError):
        return {}


def _read_if_present(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}


def _budget(size: dict, patch: int, merge: int) -> dict:
    block = (patch * merge) ** 2
    low, high = size.get("shortest_edge"), size.get("longest_edge")
    return {
        "min_pixels": low, "max_pixels": high,
        "min_tokens": low // block if low else None, "max_tokens": high // block if high else None,
    }


def _native_processor(folder: Path) -> dict:
    processor = _read_if_present(folder / "processor_config.json")
    image = processor.get("image_processor") or _read_if_present(folder / "preprocessor_config.json")
    video = processor.get("video_processor") or _read_if_present(folder / "video_preprocessor_config.json")
    result = {}
    if image:
        patch, merge = image.get("patch_size", 14), image.get("merge_size", 1)
        result["image"] = {
            "merge_size": merge, "patch_size": patch, **_budget(image.get("size", {}), patch, merge),
            "image_mean": image.get("image_mean"), "image_std": image.get("image_std"),
        }
    if video:
        patch, merge = video.get("patch_size", 14), video.get("merge_size", 2)
        result["video"] = {
            "merge_size": merge, "patch_size": patch, **_budget(video.get("size", {}), patch, merge),
            "fps": video.get("fps"), "max_frames": video.get("max_frames"),
            "do_sample_frames": video.get("do_sample_frames"),
            "diff_frame_pruning": video.get("use_token_compression"),
            "image_mean": video.get("image_mean"), "image_std": video.get("image_std"),
        }
    return result


def _native_info(folder: Path) -> dict:
    config = read_json(folder / "config.json")
    params, dtypes = _count(_tables(find_weight_files(folder)), lambda key: key)
    added = _added_tokens(folder)
    info = {
        "path": str(folder),
        "format": "native",
        "parameters": params,
        "dtype": config.get("dtype") or config.get("torch_dtype") or next(iter(dtypes), None),
        "stored_dtypes": dtypes,
        "tokens": {
            "image_token_id": config.get("image_token_id"),
            "video_token_id": config.get("video_token_id"),
            "image_token": next((t for t, i in added.items() if i == config.get("image_token_id")), None),
            "video_token": next((t for t, i in added.items() if i == config.get("video_token_id")), None),
            "vocab_size": (config.get("text_config") or {}).get("vocab_size"),
        },
        "tie_word_embeddings": config.get("tie_word_embeddings"),
        "processor": _native_processor(folder),
    }
    if config.get("video_compressor"):
        info["video_compressor"] = config["video_compressor"]
    record = folder / "vidlab_conversion.json"
    if record.is_file():
        converted = read_json(record)
        info["converted_from"] = {k: converted.get(k) for k in ("source", "kind", "base", "lora_merged")}
    return info


def _original_info(folder: Path) -> dict:
    config = read_json(folder / "config.json")
    tied = bool(config.get("tie_word_embeddings"))

    def to_native(key: str) -> str | None:
        target = native_key(canonical_key(key))
        return None if tied and target == "lm_head.weight" else target  # the tied copy is not a parameter

    tables = _tables(find_weight_files(folder))
    params, dtypes = _count(tables, to_native)
    layout = "training" if any(is_training_key(key) for table in tables for key in table) else "released"
    added = _added_tokens(folder)
    preprocessor = _read_if_present(folder / "preprocessor_config.json")
    processor = _read_if_present(folder / "processor_config.json")
    return {
        "path": str(folder),
        "format": "original",
        "layout": layout,
        "parameters": params,
        "dtype": config.get("torch_dtype") or next(iter(dtypes), None),
        "stored_dtypes": dtypes,
        "tokens": {
            "image_token_index": config.get("image_token_index"),
            "image_pad_id": added.get(IMAGE_TOKEN),
            "video_pad_id": added.get(VIDEO_TOKEN),
            "vocab_size": config.get("vocab_size"),
        },
        "tie_word_embeddings": tied,
        "vision_encoder": config.get("vision_encoder") or config.get("mm_vision_encoder"),
        "processor": {
            "image_mean": preprocessor.get("image_mean"),
            "image_std": preprocessor.get("image_std"),
            "min_tokens": preprocessor.get("min_tokens"),
            "max_tokens": preprocessor.get("max_tokens"),
            **{k: processor.get(k) for k in ("image_merge_size", "video_merge_size", "fps", "max_frames")},
            "diff_frame_pruning": config.get("use_token_compression"),
        },
    }


def _adapter_info(folder: Path) -> dict:
    run = open_lora_run(folder)

    def to_native(key: str) -> str | None:
        return native_key(canonical_key(strip_peft_names(key)))

    lora_params, lora_dtypes = _count(_tables([run.adapter_file]), to_native)
    non_lora = _count(_tables([run.non_lora_file]), to_native)[0] if run.non_lora_file else None
    config = run.adapter_config
    return {
        "path": str(folder),
        "format": "adapter",
        "peft_type": config.get("peft_type", "LORA"),
        "base": run.base_reference,
        "r": config.get("r"),
        "lora_alpha": config.get("lora_alpha"),
        "target_modules": config.get("target_modules"),
        "parameters": lora_params,
        "dtype": next(iter(lora_dtypes), None),
        "non_lora_trainables": non_lora if non_lora is not None else f"no {NON_LORA_FILE}",
        "tokens": {"image_token_index": (run.config or {}).get("image_token_index")},
    }


def model_info(path: str | Path) -> dict:
    """Describe a VideoLLaMA3 folder: native, original (released or training layout) or a LoRA run.

    Raises:
        ModelLoadError: the folder is not a VideoLLaMA3 checkpoint or cannot be read.
    """
    folder = Path(path).expanduser()
    if _model_type(folder) == "vidlab_tinyllava_video":  # another family: its own description
        from vidlab.models.tinyllava_video.info import tinyllava_video_info

        return tinyllava_video_info(folder)
    if _model_type(folder) == "vidlab_llama_vid":
        from vidlab.models.llama_vid.info import llama_vid_info

        return llama_vid_info(folder)
    try:
        kind = folder_kind(folder)
        if kind == "native":
            return _native_info(folder)
        if kind == "original":
            return _original_info(folder)
        return _adapter_info(folder)
    except CheckpointConversionError as err:
        raise ModelLoadError(str(err)) from err


def _model_type(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def _millions(count: int) -> str:
    return f"{count / 1e9:,.2f} B" if count >= 1e9 else f"{count / 1e6:,.2f} M"


def render_model_info(info: dict) -> str:
    """`model_info` as aligned text for a terminal."""
    lines = [f"path        {info['path']}"]
    format_line = info["format"]
    if info.get("layout"):
        format_line += f" ({info['layout']} layout)"
    if info.get("converted_from"):
        source = info["converted_from"]
        format_line += f", converted from {source['source']} ({source['kind']})"
    lines.append(f"format      {format_line}")
    if info["format"] == "adapter":
        lines.append(f"base        {info['base']}")
        lines.append(f"lora        r {info['r']}, alpha {info['lora_alpha']}, targets {info['target_modules']}")
    lines.append(f"dtype       {info['dtype']}")
    params = info["parameters"]
    label = "lora params" if info["format"] == "adapter" else "parameters"
    lines.append(f"{label:<11} {_millions(params['total'])}: " + ", ".join(
        f"{part} {_millions(params[part])}" for part in PARTS + ("compressor",) if part in params
    ))
    if info.get("video_compressor"):
        lines.append(f"compressor  {VideoCompressor(**info['video_compressor']).describe()}")
    non_lora = info.get("non_lora_trainables")
    if isinstance(non_lora, dict):
        lines.append("non-LoRA    " + ", ".join(f"{part} {_millions(non_lora[part])}" for part in PARTS))
    tokens = ", ".join(f"{k} {v}" for k, v in info.get("tokens", {}).items() if v is not None)
    if tokens:
        lines.append(f"tokens      {tokens}")
    processor = info.get("processor") or {}
    for name in ("image", "video"):
        if isinstance(processor.get(name), dict):
            settings = ", ".join(f"{k} {v}" for k, v in processor[name].items() if v is not None)
            lines.append(f"{name:<11} {settings}")
    if processor and not any(isinstance(v, dict) for v in processor.values()):
        lines.append("processor   " + ", ".join(f"{k} {v}" for k, v in processor.items() if v is not None))
    return "\n".join(lines)
