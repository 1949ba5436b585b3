"""Load a native transformers VideoLLaMA3 checkpoint (folder or hub id), optionally with an adapter."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import AutoProcessor, VideoLlama3ForConditionalGeneration

import vidlab.models.compressors  # noqa: F401  (registers the compressed model type with transformers' Auto classes)
from vidlab.errors import ModelLoadError
from vidlab.folders import describe_contents
from vidlab.models.adapters import (  # noqa: F401  (ADAPTER_COMPRESSOR_FILE, peft_wrapping: their old address)
    ADAPTER_COMPRESSOR_FILE,
    DEFAULT,
    adapter_compressor,
    adapter_folder,
    adapters_compressor,
    load_adapters,
    peft_wrapping,
)
from vidlab.models.template import attach_video_compressor
from vidlab.settings import VideoCompressor

NATIVE_MODEL_TYPE = "video_llama_3"
COMPRESSED_MODEL_TYPE = "vidlab_video_llama_3"  # a native VideoLLaMA3 with a vidlab video compressor
NATIVE_MODEL_TYPES = (NATIVE_MODEL_TYPE, COMPRESSED_MODEL_TYPE)
ORIGINAL_MODEL_TYPES = {"videollama3_qwen2", "videollama3"}
# Other model families: model_type -> their family (vidlab.models.<family>); the original layouts vidlab converts.
FAMILY_MODEL_TYPES = {"vidlab_tinyllava_video": "tinyllava_video", "vidlab_llama_vid": "llama_vid"}
ORIGINAL_FAMILY_TYPES = {"tinyllava": "TinyLLaVA-Video", "llava": "LLaMA-VID"}
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
    if model_type in FAMILY_MODEL_TYPES:
        return
    if model_type in ORIGINAL_FAMILY_TYPES:
        raise ModelLoadError(
            f"{folder}: is in the original {ORIGINAL_FAMILY_TYPES[model_type]} layout ({model_type}). "
            f"Convert it first: vidlab model convert {folder} {folder}-vidlab"
        )
    if model_type in ORIGINAL_MODEL_TYPES:
        raise ModelLoadError(
            f"{folder}: is in the original VideoLLaMA3 remote-code format ({model_type}). "
            f"Convert it first: vidlab model convert {folder} {folder}-hf"
        )
    if model_type not in NATIVE_MODEL_TYPES:
        raise ModelLoadError(
            f"{folder}: model_type is {model_type!r}, not {NATIVE_MODEL_TYPE!r}. vidlab loads VideoLLaMA3 checkpoints."
        )


def model_family(source: str) -> str | None:
    """The family of a local model folder other than VideoLLaMA3 (FAMILY_MODEL_TYPES), or None."""
    try:
        return FAMILY_MODEL_TYPES.get(json.loads((Path(source) / "config.json").read_text()).get("model_type"))
    except (OSError, json.JSONDecodeError):
        return None


def checkpoint_compressor(source: str) -> VideoCompressor | None:
    """The video compressor a checkpoint's config.json names (None: none, VideoLLaMA3 as released)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source)
    return config.compressor if getattr(config, "model_type", None) == COMPRESSED_MODEL_TYPE else None


def load_weights(source: str, compressor: VideoCompressor | None = None, **kwargs):
    """The model of a checkpoint (`from_pretrained` keyword arguments pass through), with `compressor` put
    between its projector and LLM when given: the checkpoint's own (config.json), or a new one, whose
    weights then start from their initialisation (seeded by the caller).

    Raises:
        ModelLoadError: `compressor` differs from one the checkpoint already has.
    """
    from transformers import AutoConfig

    from vidlab.models.compressors import CompressedVideoLlama3Config, CompressedVideoLlama3ForConditionalGeneration

    config = AutoConfig.from_pretrained(source)
    own = config.compressor if isinstance(config, CompressedVideoLlama3Config) else None
    if compressor is not None and compressor.active and own is not None and own != compressor:
        raise ModelLoadError(
            f"{source}: already has a {own.kind} video compressor ({own.model_dump(exclude_defaults=True)}), and "
            f"a different one ({compressor.kind}) was asked for. Remove model.video_compressor to keep the model's, "
            "or start from a model without one."
        )
    if own is None and (compressor is None or not compressor.active):
        return VideoLlama3ForConditionalGeneration.from_pretrained(source, **kwargs)
    if own is None:
        config = CompressedVideoLlama3Config(**config.to_dict() | {"video_compressor": compressor.model_dump()})
    return CompressedVideoLlama3ForConditionalGeneration.from_pretrained(source, config=config, **kwargs)


def model_compressor(model) -> VideoCompressor | None:
    """The video compressor of a loaded model (under a peft wrapper too), or None."""
    config = getattr(model, "config", None)
    compressor = getattr(config, "compressor", None)
    return compressor if isinstance(compressor, VideoCompressor) and compressor.active else None


def context_length(model) -> int:
    """The most tokens (prompt and answer) the model holds: its LLM's max_position_embeddings (under a peft
    wrapper too; 32768, Qwen2.5's, when the config does not say)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    text = getattr(base.config, "text_config", base.config)
    return int(getattr(text, "max_position_embeddings", None) or 32768)


def load_processor(source: str, compressor: VideoCompressor | None = None):
    """The checkpoint's processor, told the video compressor's prompt layout (its own, or `compressor`)."""
    processor = AutoProcessor.from_pretrained(source)
    return attach_video_compressor(processor, compressor or checkpoint_compressor(source))


def load_model(
    path_or_id: str | Path,
    adapter: str | Path | None = None,
    *,
    adapters: Mapping[str, str | Path] | None = None,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device = "auto",
    attn_implementation: str | None = None,
    quantize: str | None = None,
):
    """Load a native VideoLLaMA3 model and its processor.

    A checkpoint with a video compressor (config.json `video_compressor`) is built with it, and its
    processor writes the compressor's prompt layout. An adapter trained with a new compressor
    (`vidlab train` with `model.video_compressor`) brings its compressor along.

    Args:
        path_or_id: a local checkpoint folder or a hub id (downloaded when the machine can).
        adapter: a PEFT adapter folder to put on top (LoRA from `vidlab train`): `adapters={"default": adapter}`.
        adapters: name -> PEFT adapter folder, loaded side by side (the first active); answer as one
            of them, or as the base model, with `vidlab.models.adapters.active_adapter`.
        dtype: auto (bf16 on a GPU that has it, else fp32), bf16, fp16 or fp32.
        device: auto (CUDA if present, else CPU), cpu, cuda, cuda:1, ...
        attn_implementation: passed to transformers (eager, sdpa, flash_attention_2); None picks.
        quantize: 8bit or 4bit LLM weights (bitsandbytes while loading on a GPU; torchao int8 after
            loading on the CPU; see `vidlab.models.quantize`); None: as saved.

    Returns:
        (model, processor), the model in eval mode on `device`.

    Raises:
        ModelLoadError: what is wrong with the folder or an adapter's, or what `quantize` needs that is missing.
    """
    if adapter is not None:
        if adapters:
            raise ValueError("pass `adapter` or `adapters`, not both")
        adapters = {DEFAULT: adapter}
    from vidlab.models.quantize import check_quantize, quantize_weights, quantized_placement

    adapters = {name: adapter_folder(name, folder) for name, folder in (adapters or {}).items()}
    compressor = adapters_compressor(adapters)

    source = str(path_or_id)
    if looks_local(source):
        check_model_folder(Path(source).expanduser())
        source = str(Path(source).expanduser())
    device = resolve_device(device)
    check_quantize(quantize, device)
    torch_dtype = resolve_dtype(dtype, device)
    if model_family(source) == "tinyllava_video":
        from vidlab.models.tinyllava_video.load import load_tinyllava_video

        return load_tinyllava_video(source, adapters=adapters, dtype=torch_dtype, device=device,
                                    attn_implementation=attn_implementation, quantize=quantize)
    if model_family(source) == "llama_vid":
        from vidlab.models.llama_vid.load import load_llama_vid

        return load_llama_vid(source, adapters=adapters, dtype=torch_dtype, device=device,
                              attn_implementation=attn_implementation, quantize=quantize)
    torch_dtype, placement = quantized_placement(quantize, torch_dtype, device)
    try:
        model = load_weights(source, compressor, dtype=torch_dtype,
                             attn_implementation=attn_implementation, **placement)
        processor = AutoProcessor.from_pretrained(source)
    except OSError as err:
        raise ModelLoadError(
            f"{source}: could not load the model ({err}). Pass a local checkpoint folder, or a hub id on a "
            "machine that can reach the hub."
        ) from err
    attach_video_compressor(processor, model_compressor(model))
    model = load_adapters(model, adapters)
    if quantize is not None and device.type != "cuda":  # the base layers; a LoRA adapter on them stays full
        quantize_weights(model, quantize)
    model.eval()
    return model, processor
