"""A released TinyLLaVA-Video checkpoint (the original's `TinyLlavaForConditionalGeneration` folder) -> vidlab's folder.

The original's folder: config.json (`model_type: tinyllava`, the LLM and SigLIP configs as dicts,
`connector_type` groupresampler / naiveresampler, num_queries, group, num_resampler_layers), weights
named `language_model.*`, `vision_tower._vision_tower.*`, `connector._connector.*`, and the LLM's
tokenizer. vidlab's: the same tensors renamed to the native VideoLLaMA3 layout (`model.vision_model.*`: SigLIP
without its own `vision_model.` level, as transformers 5 names it; `model.projector.*`, the resampler layers'
`0` / `1` as `attention` / `feed_forward`; `model.language_model.*`, `lm_head.*`), a `vidlab_tinyllava_video`
config, the tokenizer with an `<image>` placeholder added, SigLIP's image processor, and vidlab_conversion.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from transformers import AutoTokenizer, GenerationConfig, SiglipVisionConfig
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from vidlab.errors import CheckpointConversionError
from vidlab.files import write_json
from vidlab.folders import staged_folder
from vidlab.models.convert.shards import ShardWriter, parse_size
from vidlab.models.convert.weights import find_weight_files
from vidlab.models.hub import CHECKPOINT_FILES, is_hub_id, local_folder
from vidlab.models.tinyllava_video.config import TinyLlavaVideoConfig, text_config_from
from vidlab.models.tinyllava_video.processor import TinyLlavaVideoProcessor

ORIGINAL_MODEL_TYPE = "tinyllava"
RECORD_FILE = "vidlab_conversion.json"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_RENAMES = [  # (original prefix pattern, vidlab's)
    (re.compile(r"^vision_tower\._vision_tower\.vision_model\."), "model.vision_model."),
    (re.compile(r"^connector\._connector\.layers\.(\d+)\.0\."), r"model.projector.layers.\1.attention."),
    (re.compile(r"^connector\._connector\.layers\.(\d+)\.1\."), r"model.projector.layers.\1.feed_forward."),
    (re.compile(r"^connector\._connector\."), "model.projector."),
    (re.compile(r"^language_model\.model\."), "model.language_model."),
    (re.compile(r"^language_model\.lm_head\."), "lm_head."),
]


def is_original_tinyllava(folder: Path) -> bool:
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type") == ORIGINAL_MODEL_TYPE
    except (OSError, json.JSONDecodeError):
        return False


def is_original_tinyllava_source(src: str | Path) -> bool:
    """Whether a folder, or a hub id (its config.json fetched), holds an original TinyLLaVA-Video checkpoint."""
    path = Path(str(src)).expanduser()
    if path.exists() or not is_hub_id(str(src)):
        return is_original_tinyllava(path)
    try:
        return is_original_tinyllava(local_folder(src, "checkpoint", ["config.json"]))
    except CheckpointConversionError:  # not reachable here: the VideoLLaMA3 converter says so in its own words
        return False


def native_key(key: str) -> str:
    for pattern, replacement in _RENAMES:
        if pattern.match(key):
            return pattern.sub(replacement, key, count=1)
    return key


def _resampler(original: dict, where: Path) -> str:
    kind = str(original.get("connector_type") or "")
    for name, resampler in (("groupresampler", "group"), ("naiveresampler", "naive")):
        if name in kind.lower():
            return resampler
    raise CheckpointConversionError(
        f"{where}: connector_type {kind!r} is not one of TinyLLaVA-Video's resamplers (groupresampler, "
        "naiveresampler). "
        "vidlab converts TinyLLaVA-Video checkpoints, not TinyLLaVA's image models with an MLP connector."
    )


def _template(original: dict, text_model_type: str, where: Path) -> str:
    name = str(original.get("llm_model_name_or_path") or "").lower()
    if "phi" in name or text_model_type == "phi":
        return "phi"
    if "qwen2" in name or text_model_type == "qwen2":
        return "qwen2_base"
    raise CheckpointConversionError(
        f"{where}: LLM {name or text_model_type!r} is neither Qwen2.5 nor Phi-2, the LLMs of the released "
        "TinyLLaVA-Video models; vidlab knows their templates (qwen2_base, phi) only."
    )


def native_config(original: dict, where: Path) -> TinyLlavaVideoConfig:
    """vidlab's config from the original's config.json (its sub-configs are diffs: their classes' defaults fill in)."""
    if "siglip" not in str(original.get("vision_model_name_or_path") or "siglip").lower():
        raise CheckpointConversionError(f"{where}: the vision tower is {original.get('vision_model_name_or_path')!r}; "
                                        "TinyLLaVA-Video's is SigLIP, the only one vidlab converts.")
    text = text_config_from(original.get("text_config") or {})
    vision = dict(original.get("vision_config") or {})
    vision = SiglipVisionConfig(**{k: v for k, v in vision.items() if k not in ("model_type", "model_name_or_path",
                                                                             "model_name_or_path2")})
    return TinyLlavaVideoConfig(
        vision_config=vision, text_config=text, resampler=_resampler(original, where),
        num_queries=int(original["num_queries"]), group=int(original.get("group") or 1),
        num_resampler_layers=int(original["num_resampler_layers"]),
        vision_feature_layer=int(original.get("vision_feature_layer", -2)),
        vision_feature_select_strategy=original.get("vision_feature_select_strategy", "patch"),
        image_aspect_ratio=original.get("image_aspect_ratio") or "square",
        template=_template(original, text.model_type, where),
    )


def _tokenizer(folder: Path, original: dict, tokenizer: str | Path | None):
    candidates = [tokenizer] if tokenizer is not None else [folder, original.get("tokenizer_name_or_path")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(candidate)
    raise CheckpointConversionError(
        f"{folder}: no tokenizer beside the weights, and {original.get('tokenizer_name_or_path')!r} is not a local "
        "folder. Pass the LLM's tokenizer folder with --tokenizer (e.g. a download of Qwen/Qwen2.5-3B)."
    )


def _image_processor(folder: Path, original: dict, vision: SiglipVisionConfig) -> SiglipImageProcessorPil:
    for candidate in (folder, original.get("vision_model_name_or_path")):
        if candidate and (Path(candidate) / "preprocessor_config.json").is_file():
            return SiglipImageProcessorPil.from_pretrained(candidate)
    # SigLIP's own settings (resize bicubic to the tower's size, 1/255, mean and std 0.5), as so400m ships them
    return SiglipImageProcessorPil(size={"height": vision.image_size, "width": vision.image_size})


def _expected(config: TinyLlavaVideoConfig) -> dict[str, tuple[int, ...]]:
    from vidlab.models.tinyllava_video.model import TinyLlavaVideoForConditionalGeneration

    with torch.device("meta"):
        model = TinyLlavaVideoForConditionalGeneration(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def convert_tinyllava_video(src: str | Path, out_dir: str | Path, *, dtype: str | None = None,
                            tokenizer: str | Path | None = None, max_shard_size: int | str = "4GB") -> Path:
    """`vidlab model convert` for a TinyLLaVA-Video checkpoint (folder or hub id, e.g. Zhang199/TinyLLaVA-Video-...).

    Every tensor is checked against the native model's names and shapes before anything is written.

    Raises:
        CheckpointConversionError: not a TinyLLaVA-Video checkpoint, no tokenizer, or tensors missing,
            unexpected or of the wrong shape (all listed).
    """
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise CheckpointConversionError(f"{out_dir}: already exists and is not empty. Choose a new folder.")
    if dtype is not None and dtype not in DTYPES:
        raise CheckpointConversionError(f"dtype {dtype!r}: use bf16, fp16 or fp32 (or leave it out to keep the "
                                        "checkpoint's).")
    folder = local_folder(src, "checkpoint", CHECKPOINT_FILES)
    original = json.loads((folder / "config.json").read_text())
    if original.get("model_type") != ORIGINAL_MODEL_TYPE:
        raise CheckpointConversionError(f"{folder}: model_type is {original.get('model_type')!r}, not "
                                        f"{ORIGINAL_MODEL_TYPE!r}: not a TinyLLaVA-Video checkpoint.")
    config = native_config(original, folder)
    processor = TinyLlavaVideoProcessor(_tokenizer(folder, original, tokenizer),
                                        _image_processor(folder, original, config.vision_config),
                                        num_queries=config.num_queries, image_aspect_ratio=config.image_aspect_ratio,
                                        patch_size=config.vision_config.patch_size)
    config.image_token_id = processor.image_token_id

    files = find_weight_files(folder)
    renamed = {native_key(key): (file, key, info.shape) for file in files for key, info in file.infos().items()}
    expected = _expected(config)
    tied = "lm_head.weight" if config.tie_word_embeddings else None
    problems = [f"unexpected tensor {key}" for key in renamed if key not in expected]
    problems += [f"missing tensor {key}" for key in expected if key not in renamed and key != tied]
    problems += [f"{key}: shape {list(renamed[key][2])}, the config makes {list(shape)}"
                 for key, shape in expected.items() if key in renamed and tuple(renamed[key][2]) != shape]
    if problems:
        raise CheckpointConversionError(f"{folder}: {len(problems)} problem(s), nothing written: "
                                        + "; ".join(problems[:20]))

    wanted = DTYPES.get(dtype) if dtype else None
    with staged_folder(out_dir, "converting") as staging:
        writer = ShardWriter(staging, parse_size(max_shard_size))
        for file in files:
            for key, tensor in file.tensors():
                if wanted is not None and tensor.is_floating_point():
                    tensor = tensor.to(wanted)
                writer.add(native_key(key), tensor)
        writer.close()
        if wanted is not None:
            config.dtype = str(wanted).removeprefix("torch.")
        config.save_pretrained(staging)
        tokenizer_ = processor.tokenizer
        GenerationConfig(eos_token_id=tokenizer_.eos_token_id, pad_token_id=tokenizer_.pad_token_id,
                         do_sample=False).save_pretrained(staging)
        processor.save_pretrained(staging)
        write_json(staging / RECORD_FILE, {
            "source": str(src) if is_hub_id(str(src)) else str(folder.resolve()),
            "family": "tinyllava_video", "tensors": len(renamed),
            "renamed": [f"{p.pattern} -> {r}" for p, r in _RENAMES],
            "tied_lm_head": tied is not None and tied not in renamed,
        })
    return out_dir
