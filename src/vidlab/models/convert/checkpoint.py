"""Convert original VideoLLaMA3 checkpoints to the native transformers layout.

    convert_checkpoint("DAMO-NLP-SG/VideoLLaMA3-2B", "VideoLLaMA3-2B-hf", dtype="bf16").folder

Everything is read and checked first (config, tokenizer, processor settings, every tensor's name and
shape); only then are the weights streamed, one source shard at a time, into sharded safetensors in a
hidden sibling folder that is renamed to OUT_DIR at the very end. An error or a crash leaves no
OUT_DIR; a crash at worst leaves the hidden `.OUT_DIR.converting-*` folder, which is safe to delete.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, VideoLlama3Config, VideoLlama3Processor

from vidlab.errors import CheckpointConversionError
from vidlab.folders import staged_folder
from vidlab.models.convert.lora import read_lora
from vidlab.models.convert.native_config import build_native_config, native_tensor_shapes
from vidlab.models.convert.native_processor import (
    OriginalPreprocessing,
    build_generation_config,
    build_processor,
    find_file,
    load_tokenizer,
    read_preprocessing,
)
from vidlab.models.convert.original import (
    NON_LORA_FILE,
    LoraRun,
    OriginalCheckpoint,
    folder_kind,
    open_lora_run,
    open_original,
    vision_encoder_folder,
)
from vidlab.models.convert.plan import ConversionPlan, plan_conversion
from vidlab.models.convert.shards import ShardWriter, parse_size
from vidlab.models.hub import CHECKPOINT_FILES, is_hub_id, local_folder
from vidlab.models.template import IMAGE_TOKEN, VIDEO_TOKEN

OUTPUT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
RECORD_FILE = "vidlab_conversion.json"


@dataclass(frozen=True)
class _Sources:
    """What a conversion reads: the full weights, the config that describes the result, and where the
    tokenizer, processor and generation files are looked for (first folder first)."""

    checkpoint: OriginalCheckpoint  # the base checkpoint, for a LoRA run
    config: dict
    config_path: Path
    folders: list[Path]
    lora_run: LoraRun | None = None


def _gather_sources(folder: Path, base: str | Path | None, llm_only: bool = False) -> _Sources:
    if folder_kind(folder) != "adapter":
        if base is not None:
            raise CheckpointConversionError(
                f"{folder}: is a full checkpoint; --base is only for LoRA runs. Leave --base out."
            )
        checkpoint = open_original(folder)
        return _Sources(checkpoint, checkpoint.config, folder / "config.json", [folder])
    run = open_lora_run(folder)
    if run.non_lora_file is None and not llm_only:
        raise CheckpointConversionError(
            f"{folder}: has no {NON_LORA_FILE}. The original training code always writes it beside the adapter: it "
            "holds the trained projector (and vision encoder, and biases); without it the base's untrained projector "
            f"would be kept. Copy {NON_LORA_FILE} from the run's output folder, or, if the run trained only the "
            "LLM's adapters, say so with --llm-only (python: llm_only=True)."
        )
    base_reference = base if base is not None else run.base_reference
    named_in = "--base" if base is not None else f"base_model_name_or_path in {folder / 'adapter_config.json'}"
    if not base_reference:
        raise CheckpointConversionError(
            f"{folder / 'adapter_config.json'}: names no base model. Pass the checkpoint the LoRA run started "
            "from: --base FOLDER (python: base=...)."
        )
    try:
        base_folder = local_folder(base_reference, "LoRA base", CHECKPOINT_FILES)
    except CheckpointConversionError as err:
        raise CheckpointConversionError(
            f"{err}\nThe LoRA base comes from {named_in}. Pass the folder of the model the run started from "
            "with --base FOLDER."
        ) from err
    checkpoint = open_original(base_folder)
    if run.config is not None:
        return _Sources(checkpoint, run.config, folder / "config.json", [folder, base_folder], run)
    return _Sources(checkpoint, checkpoint.config, base_folder / "config.json", [folder, base_folder], run)


def _preprocessing(sources: _Sources) -> tuple[OriginalPreprocessing, list[Path]]:
    folders = sources.folders
    if find_file("preprocessor_config.json", folders) is None:
        # A training folder has none; the vision encoder it was trained with has the original one.
        for config in (sources.config, sources.checkpoint.config):
            encoder = vision_encoder_folder(config)
            if encoder is not None:
                folders = [*folders, encoder]
                break
    return read_preprocessing(folders, use_token_compression=sources.config.get("use_token_compression", True))


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in OUTPUT_DTYPES:
        raise CheckpointConversionError(
            f"dtype {dtype!r}: use bf16, fp16 or fp32 (or leave it out to keep the checkpoint's)."
        )
    return OUTPUT_DTYPES[dtype]


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise CheckpointConversionError(
            f"{out_dir}: already exists and is not empty. Choose a new folder or delete this one."
        )


def _dominant_dtype(dtype_numel: Counter) -> torch.dtype:
    floating = [(numel, name) for name, numel in dtype_numel.items() if name.startswith(("float", "bfloat"))]
    return getattr(torch, max(floating)[1]) if floating else torch.float32


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is None or not tensor.is_floating_point() or tensor.dtype == dtype:
        return tensor
    return tensor.to(dtype)


def _write_weights(
    plan: ConversionPlan, sources: _Sources, folder: Path, dtype: torch.dtype | None, max_bytes: int, progress: bool
) -> tuple[int, list[Path]]:
    """Stream the source shards into native shards; returns (tensors written, shard paths)."""
    replacements = {}
    if plan.replacements and sources.lora_run is not None and sources.lora_run.non_lora_file is not None:
        replacements = dict(sources.lora_run.non_lora_file.tensors())
    writer = ShardWriter(folder, max_bytes)
    written = 0
    for weight_file in tqdm(plan.files, desc="Converting shards", unit="shard", disable=not progress):
        for key, tensor in weight_file.tensors():
            target = plan.targets.get((weight_file.path, key))
            if target is None:
                continue  # dropped on purpose (see the plan)
            if target in plan.replacements:
                tensor = replacements[plan.replacements[target]]
            elif target in plan.biases:
                tensor = plan.biases[target]
            if target in plan.lora:
                tensor = plan.lora[target].merge(tensor)
            writer.add(target, _cast(tensor, dtype))
            written += 1
    return written, writer.close()


@dataclass(frozen=True)
class _Prepared:
    """Everything the output folder will hold, checked, with the weights still to be streamed."""

    sources: _Sources
    plan: ConversionPlan
    config: VideoLlama3Config
    processor: VideoLlama3Processor
    generation_config: GenerationConfig
    settings: OriginalPreprocessing
    settings_files: list[Path]


def _prepare(sources: _Sources, dtype: torch.dtype | None) -> _Prepared:
    """Read and check everything (config, tokenizer, tensors, preprocessing); write nothing."""
    config = sources.config
    vocab_size = config.get("vocab_size")
    if not isinstance(vocab_size, int):
        raise CheckpointConversionError(
            f"{sources.config_path}: has no vocab_size. Restore the config.json of these weights."
        )
    tokenizer = load_tokenizer(sources.folders, vocab_size)
    base_config = [(sources.checkpoint.config, sources.checkpoint.folder / "config.json")]
    native_config = build_native_config(
        config,
        sources.config_path,
        more_configs=base_config if sources.lora_run else None,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype=dtype or torch.float32,
    )
    lora = read_lora(sources.lora_run) if sources.lora_run is not None else None
    plan = plan_conversion(
        sources.checkpoint.weight_files,
        native_tensor_shapes(native_config),
        tied_embeddings=native_config.tie_word_embeddings,
        replacement_file=sources.lora_run.non_lora_file if sources.lora_run else None,
        lora=lora.factors if lora else None,
        lora_problems=lora.problems if lora else None,
        lora_biases=lora.biases if lora else None,
        subject=str(sources.folders[0]),
    )
    native_config.dtype = dtype or _dominant_dtype(plan.dtype_numel)
    settings, settings_files = _preprocessing(sources)
    if settings.patch_size != native_config.vision_config.patch_size:
        raise CheckpointConversionError(
            f"{settings_files[0]}: patch_size {settings.patch_size} differs from the vision encoder's "
            f"{native_config.vision_config.patch_size}. Use the preprocessor_config.json of these weights."
        )
    return _Prepared(
        sources=sources,
        plan=plan,
        config=native_config,
        processor=build_processor(tokenizer, settings),
        generation_config=build_generation_config(sources.folders, tokenizer),
        settings=settings,
        settings_files=settings_files,
    )


def _record(job: _Prepared, source: str, written: int, shards: list[Path]) -> dict:
    """vidlab_conversion.json: where the folder came from and what the conversion did."""
    lora_run, plan = job.sources.lora_run, job.plan
    return {
        "source": source,
        "kind": "lora" if lora_run else plan.layout,
        "base_layout": plan.layout if lora_run else None,
        "base": str(job.sources.checkpoint.folder) if lora_run else None,
        "dtype": str(job.config.dtype).removeprefix("torch."),
        "tensors": written,
        "shards": [p.name for p in shards],
        "dropped": plan.dropped,
        "replaced_from_non_lora_trainables": sorted(plan.replacements),
        "biases_from_adapter": sorted(plan.biases),
        "lora_merged": len(plan.lora),
        "original_image_token_id": job.sources.config.get("image_token_index"),
        "preprocessing": job.settings.to_dict(),
        "preprocessing_read_from": [str(p) for p in job.settings_files],
    }


def _write_native(
    src: str | Path,
    out_dir: str | Path,
    dtype: str | torch.dtype | None = None,
    progress: bool = True,
    base: str | Path | None = None,
    max_shard_size: int | str = "4GB",
    llm_only: bool = False,
) -> Path:
    """Write the native folder; arguments as `convert_checkpoint`."""
    out_dir = Path(out_dir).expanduser()
    _check_out_dir(out_dir)
    wanted_dtype = _resolve_dtype(dtype)
    max_bytes = parse_size(max_shard_size)
    source_folder = local_folder(src, "checkpoint", CHECKPOINT_FILES)
    job = _prepare(_gather_sources(source_folder, base, llm_only), wanted_dtype)

    with staged_folder(out_dir, "converting") as staging:
        written, shards = _write_weights(job.plan, job.sources, staging, wanted_dtype, max_bytes, progress)
        job.config.save_pretrained(staging)
        job.generation_config.save_pretrained(staging)
        job.processor.save_pretrained(staging)
        source = str(src) if is_hub_id(str(src)) else str(source_folder.resolve())
        record = _record(job, source, written, shards)
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out_dir


@dataclass(frozen=True)
class CheckpointConversion:
    """A finished checkpoint conversion: the native folder and what `vidlab model info` says of it."""

    folder: Path
    info: dict


def convert_checkpoint(
    src: str | Path,
    out_dir: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    base: str | Path | None = None,
    max_shard_size: int | str = "4GB",
    llm_only: bool = False,
    progress: bool = True,
    tokenizer: str | Path | None = None,
    vision_tower: str | Path | None = None,
    bert: str | Path | None = None,
) -> CheckpointConversion:
    """`vidlab model convert`: an original VideoLLaMA3 checkpoint (or LoRA run, merged) -> a native transformers folder.

    Args:
        src: a released remote-code checkpoint (folder or hub id, e.g. DAMO-NLP-SG/VideoLLaMA3-2B), a
            checkpoint saved by the original training code, or the output folder of its LoRA run.
        out_dir: the folder to create; it must not exist yet (or be empty).
        dtype: bf16, fp16 or fp32; None keeps each tensor's stored dtype.
        base: for a LoRA run, the checkpoint it was trained from (default: the adapter config's
            base_model_name_or_path); its LoRA factors are merged into the weights.
        max_shard_size: the largest weight file to write, e.g. "4GB" or "500MB".
        llm_only: for a LoRA run without non_lora_trainables.bin: the run trained only the LLM's
            adapters, so the base's projector and vision encoder are the right ones.
        progress: show a progress bar over the source shards.
        tokenizer: TinyLLaVA-Video checkpoints without their tokenizer: the LLM's tokenizer folder.
        vision_tower: LLaMA-VID: LAVIS's eva_vit_g.pth (default: the path its config.json names).
        bert: LLaMA-VID: a bert-base-uncased folder for the Q-Former's tokenizer (default: from the Hub).

    Returns:
        The folder, complete (weights, config, tokenizer, chat template, image and video processor
        configs, generation config, and vidlab_conversion.json saying what was done), and its
        parameters, dtype and settings.

    Raises:
        CheckpointConversionError: the source is not a convertible VideoLLaMA3 checkpoint, with every problem found.
    """
    from vidlab.models.info import model_info
    from vidlab.models.tinyllava_video.convert import convert_tinyllava_video, is_original_tinyllava_source

    if is_original_tinyllava_source(src):  # another family's layout: its own converter
        folder = convert_tinyllava_video(src, out_dir, dtype=dtype, tokenizer=tokenizer, max_shard_size=max_shard_size)
        return CheckpointConversion(folder, model_info(folder))
    from vidlab.models.llama_vid.convert import convert_llama_vid, is_original_llama_vid_source

    if is_original_llama_vid_source(src):
        folder = convert_llama_vid(src, out_dir, dtype=dtype, vision_tower=vision_tower, bert=bert,
                                   max_shard_size=max_shard_size)
        return CheckpointConversion(folder, model_info(folder))
    folder = _write_native(src, out_dir, dtype=dtype, progress=progress, base=base, max_shard_size=max_shard_size,
                           llm_only=llm_only)
    return CheckpointConversion(folder, model_info(folder))
