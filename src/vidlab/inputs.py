"""Conversation + its media -> model inputs, through the native VideoLLaMA3 processor.

The processor writes `Time X.Xs:` before each frame from the video metadata; vidlab hands it the
frames' true times (variable frame rate included) instead of letting it assume frame_index / fps.
"""

from __future__ import annotations

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


def _metadata(clip: VideoClip) -> TimedVideoMetadata:
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
    videos = [m for m in media if isinstance(m, VideoClip)]
    images = [m for m in media if not isinstance(m, VideoClip)]
    text = processor.apply_chat_template(
        conversation.to_messages(), tokenize=False, add_generation_prompt=add_generation_prompt
    )
    kwargs = {}
    if videos:
        kwargs["videos"] = [clip.frames for clip in videos]
        kwargs["video_metadata"] = [_metadata(clip) for clip in videos]
        kwargs["use_token_compression"] = compression
    if images:
        kwargs["images"] = images
    batch = processor(text=[text], return_tensors="pt", **kwargs)
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}

    visual_before = visual_after = 0
    if videos:
        merge = tensors["video_merge_sizes"]
        visual_before += int((tensors["video_grid_thw"].prod(-1) // merge**2).sum())
        visual_after += int(tensors["video_compression_mask"].sum())
    if images:
        image_tokens = int((tensors["image_grid_thw"].prod(-1) // tensors["image_merge_sizes"] ** 2).sum())
        visual_before += image_tokens
        visual_after += image_tokens
    stats = InputStats(
        frames=[clip.clip_timestamps for clip in videos],
        visual_tokens=visual_after,
        visual_tokens_before_pruning=visual_before,
        text_tokens=tensors["input_ids"].shape[1] - visual_after,
    )
    return ModelInputs(tensors=tensors, stats=stats, text=text)
