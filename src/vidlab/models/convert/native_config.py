"""The native VideoLlama3Config from an original config.json.

The original config is a Qwen2 config with the VideoLLaMA3 fields added (`vision_encoder_config`,
`mm_projector_type`, `image_token_index`, `use_token_compression`); the native one nests a qwen2
`text_config` and a `vision_config`, and names the `<|image_pad|>` / `<|video_pad|>` token ids.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import VideoLlama3Config, VideoLlama3ForConditionalGeneration

from vidlab.errors import CheckpointConversionError
from vidlab.models.convert.original import read_json, vision_encoder_folder, vision_encoder_reference

TEXT_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
    "use_cache", "tie_word_embeddings", "rope_theta", "rope_scaling", "rope_parameters", "use_sliding_window",
    "sliding_window", "max_window_layers", "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id",
)
VISION_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels", "patch_size",
    "hidden_act", "layer_norm_eps", "attention_dropout",
)
# The native projector is Linear -> GELU -> Linear, which is the original's mlp2x_gelu.
SUPPORTED_PROJECTOR = "mlp2x_gelu"


def vision_settings(configs: list[tuple[dict, Path]]) -> dict:
    """Sizes of the vision encoder, from the first of `configs` (config, its path) that has them: its
    `vision_encoder_config` (released), else the config.json of the encoder folder it names (training)."""
    for config, _ in configs:
        nested = config.get("vision_encoder_config")
        if isinstance(nested, dict) and nested:
            return {k: nested[k] for k in VISION_FIELDS if k in nested}
    for config, _ in configs:
        folder = vision_encoder_folder(config)
        if folder is not None and (folder / "config.json").is_file():
            encoder_config = read_json(folder / "config.json")
            if "hidden_size" in encoder_config:
                return {k: encoder_config[k] for k in VISION_FIELDS if k in encoder_config}
    config, config_path = configs[0]
    reference = vision_encoder_reference(config)
    named = f"it names {reference!r}, which is not a folder with the encoder's config.json" if reference else (
        "it names no vision encoder either"
    )
    raise CheckpointConversionError(
        f"{config_path}: has no vision_encoder_config and {named}. Point `vision_encoder` in this file at the "
        "vision encoder folder (DAMO-NLP-SG/SigLIP-NaViT or your own), or copy `vision_encoder_config` from the "
        "config.json of the released model you started from."
    )


def check_projector(config: dict, config_path: Path) -> None:
    projector = config.get("mm_projector_type", SUPPORTED_PROJECTOR)
    if projector != SUPPORTED_PROJECTOR:
        raise CheckpointConversionError(
            f"{config_path}: mm_projector_type is {projector!r}; the native VideoLLaMA3 class has only the "
            f"{SUPPORTED_PROJECTOR} projector (Linear, GELU, Linear). This checkpoint cannot become a native one."
        )


def build_native_config(
    config: dict,
    config_path: Path,
    *,
    more_configs: list[tuple[dict, Path]] | None = None,
    image_token_id: int,
    video_token_id: int,
    eos_token_id: int | None,
    pad_token_id: int | None,
    dtype: torch.dtype,
) -> VideoLlama3Config:
    """Map an original config.json (already read) to the native config.

    `more_configs` are looked at for the vision encoder's sizes when `config` lacks them (a LoRA run's
    config falls back on its base's).
    """
    check_projector(config, config_path)
    text = {k: config[k] for k in TEXT_FIELDS if k in config}
    text["model_type"] = "qwen2"
    if text.get("eos_token_id") is None and eos_token_id is not None:
        text["eos_token_id"] = eos_token_id
    if text.get("pad_token_id") is None and pad_token_id is not None:
        text["pad_token_id"] = pad_token_id
    tie = bool(config.get("tie_word_embeddings", False))
    text["tie_word_embeddings"] = tie
    native = VideoLlama3Config(
        text_config=text,
        vision_config=vision_settings([(config, config_path), *(more_configs or [])]),
        image_token_id=image_token_id,
        video_token_id=video_token_id,
        tie_word_embeddings=tie,
    )
    native.architectures = ["VideoLlama3ForConditionalGeneration"]
    native.dtype = dtype
    return native


def native_tensor_shapes(config: VideoLlama3Config) -> dict[str, tuple[int, ...]]:
    """Every tensor the native model stores, with its shape; built on the meta device (no memory)."""
    with torch.device("meta"):
        model = VideoLlama3ForConditionalGeneration(config)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)  # the embedding matrix serves as the head
    return shapes
