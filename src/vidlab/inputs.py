"""Conversation + its media -> model inputs, through the native VideoLLaMA3 processor.

The processor writes `Time X.Xs:` before each frame from the video metadata; vidlab hands it the
frames' true times (variable frame rate included) instead of letting it assume frame_index / fps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image
from transformers.video_utils import VideoMetadata

from vidlab.conversation import Conversation
from vidlab.media import DEFAULT_FOLDER_FPS, Sampling, VideoClip, load_image, load_video

LoadedMedia = VideoClip | Image.Image


@dataclass
class TimedVideoMetadata(VideoMetadata):
    """VideoMetadata whose timestamps are the frames' real times, not frames_indices / fps."""

    frame_times: list[float] = field(default_factory=list)

    @property
    def timestamps(self) -> list[float]:
        return self.frame_times


@dataclass
class InputStats:
    """What went into one input: frames per video and how the tokens were spent."""

    frames: list[list[float]]  # per video, the times announced in the prompt (from the clip start)
    visual_tokens: int  # vision tokens the LLM sees (after DiffFP pruning)
    visual_tokens_before_pruning: int
    text_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.visual_tokens + self.text_tokens


@dataclass
class ModelInputs:
    tensors: dict[str, torch.Tensor]
    stats: InputStats
    text: str  # the rendered prompt, one <|video_pad|> per video before expansion


def load_media(
    conversation: Conversation,
    data_root: str | Path | None = None,
    sampling: Sampling = Sampling(),
    folder_fps: float = DEFAULT_FOLDER_FPS,
) -> list[LoadedMedia]:
    """Decode every video and image of the conversation, in order. Relative paths use data_root."""
    loaded: list[LoadedMedia] = []
    for part in conversation.media:
        path = Path(part.path).expanduser()
        if data_root is not None and not path.is_absolute():
            path = Path(data_root) / path
        if part.type == "image":
            loaded.append(load_image(path))
            continue
        clip_sampling = sampling
        if part.start is not None or part.end is not None:
            clip_sampling = replace(sampling, start=part.start, end=part.end)
        loaded.append(load_video(path, clip_sampling, folder_fps))
    return loaded


def video_metadata(clip: VideoClip) -> TimedVideoMetadata:
    height, width = clip.frames.shape[1:3]
    return TimedVideoMetadata(
        total_num_frames=len(clip),
        fps=clip.source_fps,
        width=width,
        height=height,
        duration=clip.duration,
        frames_indices=clip.frame_indices,
        frame_times=clip.clip_timestamps,
    )


@dataclass
class BatchInputs:
    """Several conversations padded on the left into one batch, for batched generation."""

    tensors: dict[str, torch.Tensor]
    stats: list[InputStats]  # per sample, in order
    texts: list[str]  # per sample, the rendered prompt before expansion


def build_batch(
    items: Sequence[tuple[Conversation, list[LoadedMedia]]],
    processor,
    *,
    compression: bool = True,
    add_generation_prompt: bool = True,
) -> BatchInputs:
    """Tokens, pixels and masks for several conversations in one batch, padded on the left.

    Videos, images and text-only conversations may be mixed. Left padding puts every prompt's
    last token in the last column, so generation continues all of them from the same position.

    Args:
        items: (conversation, media) pairs; each media list is what `load_media` returned.
        processor: the model's VideoLlama3Processor.
        compression: DiffFP pruning of video tokens (see `build_inputs`).
        add_generation_prompt: end each prompt with `<|im_start|>assistant\\n`.
    """
    if not items:
        raise ValueError("build_batch needs at least one (conversation, media) pair")
    texts = [
        processor.apply_chat_template(conv.to_messages(), tokenize=False, add_generation_prompt=add_generation_prompt)
        for conv, _ in items
    ]
    videos = [[m for m in media if isinstance(m, VideoClip)] for _, media in items]
    images = [[m for m in media if not isinstance(m, VideoClip)] for _, media in items]
    all_videos = [clip for sample in videos for clip in sample]
    all_images = [image for sample in images for image in sample]
    kwargs = {}
    if all_videos:
        kwargs["videos"] = [clip.frames for clip in all_videos]
        kwargs["video_metadata"] = [video_metadata(clip) for clip in all_videos]
        kwargs["use_token_compression"] = compression
    if all_images:
        kwargs["images"] = all_images
    batch = processor(text=texts, return_tensors="pt", padding=True, padding_side="left", **kwargs)
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    stats = batch_stats(tensors, videos, [len(sample) for sample in images])
    return BatchInputs(tensors=tensors, stats=stats, texts=texts)


def batch_stats(
    tensors: dict[str, torch.Tensor], videos: list[list[VideoClip]], image_counts: list[int]
) -> list[InputStats]:
    """Per-sample token counts. The processor lists the batch's videos and images in sample order."""
    video_before: list[int] = []
    video_after: list[int] = []
    if "video_grid_thw" in tensors:
        video_before = (tensors["video_grid_thw"].prod(-1) // tensors["video_merge_sizes"] ** 2).tolist()
        masks = tensors["video_compression_mask"].split(video_before)
        video_after = [int(mask.sum()) for mask in masks]
    image_tokens: list[int] = []
    if "image_grid_thw" in tensors:
        image_tokens = (tensors["image_grid_thw"].prod(-1) // tensors["image_merge_sizes"] ** 2).tolist()
    stats = []
    next_video = next_image = 0
    for row, (sample_videos, n_images) in enumerate(zip(videos, image_counts)):
        n_videos = len(sample_videos)
        before = sum(video_before[next_video : next_video + n_videos])
        after = sum(video_after[next_video : next_video + n_videos])
        pictures = sum(image_tokens[next_image : next_image + n_images])
        next_video += n_videos
        next_image += n_images
        length = int(tensors["attention_mask"][row].sum())
        stats.append(
            InputStats(
                frames=[clip.clip_timestamps for clip in sample_videos],
                visual_tokens=after + pictures,
                visual_tokens_before_pruning=before + pictures,
                text_tokens=length - after - pictures,
            )
        )
    return stats


def build_inputs(
    conversation: Conversation,
    media: list[LoadedMedia],
    processor,
    *,
    compression: bool = True,
    add_generation_prompt: bool = True,
) -> ModelInputs:
    """Tokens, pixels and masks for one conversation.

    Args:
        conversation: the turns; its media parts are matched in order with `media`.
        media: what `load_media` returned for this conversation.
        processor: the model's VideoLlama3Processor.
        compression: DiffFP, VideoLLaMA3's pruning of video tokens that barely change from the
            previous frame. On by default, as in the released models.
        add_generation_prompt: end with `<|im_start|>assistant\\n` so the model answers.
    """
    batch = build_batch(
        [(conversation, media)], processor, compression=compression, add_generation_prompt=add_generation_prompt
    )
    return ModelInputs(tensors=batch.tensors, stats=batch.stats[0], text=batch.texts[0])
