"""Tokenizer, processor and generation settings of the native folder, from the original's files.

The original image processor counts its budget in tokens of (patch x merge)^2 pixels:
`min_tokens` per image or frame, `max_tokens` per image or shared by all frames of a video
(preprocessor_config.json); merge sizes, fps and max_frames come from processor_config.json. The
native processors take the same budget in pixels, so min_pixels = min_tokens * (14 * merge)^2 and
max_pixels = max_tokens * (14 * merge)^2, with the video budget divided among its frames as before.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2Tokenizer,
    VideoLlama3ImageProcessor,
    VideoLlama3Processor,
    VideoLlama3VideoProcessor,
)

from vidlab.errors import CheckpointConversionError
from vidlab.models.convert.original import read_json
from vidlab.models.template import CHAT_TEMPLATE, IMAGE_TOKEN, VIDEO_TOKEN

# The released processor_config.json values, used when a training folder has none.
RELEASED_PROCESSOR = {"image_merge_size": 1, "video_merge_size": 2, "fps": 1, "max_frames": 180}
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


@dataclass(frozen=True)
class OriginalPreprocessing:
    """The original preprocessing, as its config files state it."""

    image_mean: list[float]
    image_std: list[float]
    patch_size: int = 14
    min_tokens: int = 16
    max_tokens: int = 16384
    resample: int = 3  # bicubic
    rescale_factor: float = 1 / 255
    do_convert_rgb: bool = True
    image_merge_size: int = 1
    video_merge_size: int = 2
    fps: float = 1
    max_frames: int = 180
    use_token_compression: bool = True

    def pixel_budget(self, merge_size: int) -> tuple[int, int]:
        """(min_pixels, max_pixels) for one image, or (per frame, per video) for a video."""
        block = (self.patch_size * merge_size) ** 2
        return self.min_tokens * block, self.max_tokens * block

    def to_dict(self) -> dict:
        return asdict(self)


def find_file(name: str, folders: list[Path]) -> Path | None:
    """The first `folders[i] / name` that exists."""
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    return None


def read_preprocessing(folders: list[Path], use_token_compression: bool) -> tuple[OriginalPreprocessing, list[Path]]:
    """The original preprocessing from the first preprocessor_config.json / processor_config.json found.

    Returns the settings and the files they were read from.
    """
    image_path = find_file("preprocessor_config.json", folders)
    if image_path is None:
        searched = ", ".join(str(f) for f in folders)
        raise CheckpointConversionError(
            f"no preprocessor_config.json in {searched}: the image normalisation and pixel budget of the original "
            "model are unknown. Copy preprocessor_config.json (and processor_config.json) from the released model "
            "you started from, e.g. DAMO-NLP-SG/VideoLLaMA3-2B, into the checkpoint folder."
        )
    image = read_json(image_path)
    missing = [k for k in ("image_mean", "image_std") if k not in image]
    if missing:
        raise CheckpointConversionError(
            f"{image_path}: has no {' or '.join(missing)}. Restore it from the released model."
        )
    processor_path = find_file("processor_config.json", folders)
    stated = read_json(processor_path) if processor_path else {}
    processor = {**RELEASED_PROCESSOR, **{k: v for k, v in stated.items() if v is not None}}
    settings = OriginalPreprocessing(
        image_mean=list(image["image_mean"]),
        image_std=list(image["image_std"]),
        patch_size=image.get("patch_size", 14),
        min_tokens=image.get("min_tokens", 16),
        max_tokens=image.get("max_tokens", 16384),
        resample=image.get("resample", 3),
        rescale_factor=image.get("rescale_factor", 1 / 255),
        do_convert_rgb=image.get("do_convert_rgb", True),
        image_merge_size=processor["image_merge_size"],
        video_merge_size=processor["video_merge_size"],
        fps=processor["fps"],
        max_frames=processor["max_frames"],
        use_token_compression=use_token_compression,
    )
    return settings, [p for p in (image_path, processor_path) if p is not None]


def load_tokenizer(folders: list[Path], vocab_size: int):
    """The original tokenizer with `<|image_pad|>` and `<|video_pad|>`; its chat template replaced by the native one.

    Qwen tokenizers already hold both tokens; the original's added `<image>` stays, so every id keeps its
    embedding row. A tokenizer without them gets them only if the embedding matrix has unused rows for them.
    """
    folder = next((f for f in folders if any((f / name).is_file() for name in TOKENIZER_FILES)), None)
    if folder is None:
        searched = ", ".join(str(f) for f in folders)
        raise CheckpointConversionError(
            f"no tokenizer (tokenizer.json or vocab.json + merges.txt) in {searched}. Copy the tokenizer files of "
            "the model you trained from into the checkpoint folder."
        )
    # Load the tokenizer files as they are; AutoTokenizer would consult config.json's remote-code auto_map.
    tokenizer_class = PreTrainedTokenizerFast if (folder / "tokenizer.json").is_file() else Qwen2Tokenizer
    tokenizer = tokenizer_class.from_pretrained(str(folder))
    missing = [t for t in (IMAGE_TOKEN, VIDEO_TOKEN) if t not in tokenizer.get_vocab()]
    if missing:
        if len(tokenizer) + len(missing) > vocab_size:
            raise CheckpointConversionError(
                f"{folder}: the tokenizer has no {' or '.join(missing)} and the embedding matrix ({vocab_size} rows) "
                f"has no free row for them ({len(tokenizer)} tokens). Use a Qwen2 tokenizer, which has both."
            )
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if len(tokenizer) > vocab_size:
        raise CheckpointConversionError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens but the model's embedding matrix only {vocab_size} "
            "rows. The tokenizer does not belong to these weights: use the one saved with them."
        )
    # The remote-code processor no longer applies; the loading flags are not settings of the tokenizer.
    for stale in ("auto_map", "processor_class", "is_local", "local_files_only"):
        tokenizer.init_kwargs.pop(stale, None)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer, settings: OriginalPreprocessing) -> VideoLlama3Processor:
    """Native image and video processors that resize, normalise and merge as the original did."""
    common = {
        "image_mean": settings.image_mean,
        "image_std": settings.image_std,
        "patch_size": settings.patch_size,
        "resample": settings.resample,
        "rescale_factor": settings.rescale_factor,
        "do_convert_rgb": settings.do_convert_rgb,
    }
    image_min, image_max = settings.pixel_budget(settings.image_merge_size)
    video_min, video_max = settings.pixel_budget(settings.video_merge_size)
    image_processor = VideoLlama3ImageProcessor(
        min_pixels=image_min, max_pixels=image_max, merge_size=settings.image_merge_size, **common
    )
    video_processor = VideoLlama3VideoProcessor(
        min_pixels=video_min,  # per frame
        max_pixels=video_max,  # per video, divided among its frames
        merge_size=settings.video_merge_size,
        fps=settings.fps,
        max_frames=settings.max_frames,
        use_token_compression=settings.use_token_compression,
        **common,
    )
    return VideoLlama3Processor(
        image_processor=image_processor,
        video_processor=video_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def build_generation_config(folders: list[Path], tokenizer) -> GenerationConfig:
    """The original generation_config.json where there is one, with the end-of-turn and pad ids filled in."""
    path = find_file("generation_config.json", folders)
    settings = read_json(path) if path else {}
    for private in ("transformers_version", "_from_model_config"):
        settings.pop(private, None)
    settings.setdefault("eos_token_id", tokenizer.eos_token_id)
    settings.setdefault("pad_token_id", tokenizer.pad_token_id)
    if not settings.get("do_sample") and not any(k in settings for k in ("temperature", "top_p", "top_k")):
        settings["do_sample"] = False
    return GenerationConfig(**settings)
