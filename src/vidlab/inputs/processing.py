"""One call of the native VideoLLaMA3 processor: frames with their true times, a token budget, merge sizes.

The processor writes `Time X.Xs:` before each frame from the video metadata; vidlab hands it the
frame rule's stamps (variable frame rate included), rounded as VideoLLaMA3's template rounds them,
instead of letting it assume frame_index / fps.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from transformers.image_utils import SizeDict
from transformers.video_utils import VideoMetadata

from vidlab.errors import MediaError
from vidlab.inputs.compressed import layout_processor
from vidlab.media import VideoClip
from vidlab.media.clip import announced_stamps
from vidlab.models.template import video_compressor_of
from vidlab.settings import MediaSettings


@dataclass
class TimedVideoMetadata(VideoMetadata):
    """VideoMetadata whose timestamps are the frames' real times, not frames_indices / fps."""

    frame_times: list[float] = field(default_factory=list)

    @property
    def timestamps(self) -> list[float]:
        return self.frame_times


def video_metadata(clip: VideoClip) -> TimedVideoMetadata:
    height, width = clip.frames.shape[1:3]
    return TimedVideoMetadata(
        total_num_frames=len(clip),
        fps=clip.source_fps,
        width=width,
        height=height,
        duration=clip.duration,
        frames_indices=clip.frame_indices,
        frame_times=announced_stamps(clip),  # rounded as VideoLLaMA3's template rounds them
    )


@dataclass(frozen=True)
class FrameSizer:
    """(height, width, frames) -> the (height, width) the video processor will bring each frame to:
    VideoLLaMA3's smart_resize within the video's token budget, shared by its frames.

    The decoder scales frames to it while decoding, so they never sit in memory larger than they
    will be used, and the processor then finds them at their final size: the tokens are the same.
    Hashable, so that decoded clips can be cached by it.
    """

    factor: int  # pixels per token side (patch x merge)
    min_pixels: int  # per frame
    budget: int  # tokens of the whole video
    max_frames_kept: int | None  # the budget keeps at most this many frames (budget.fit), when set
    per_frame: int | None = None  # tokens of each frame whatever their number (a compressor's encoder_frame_tokens)

    def __call__(self, height: int, width: int, frames: int) -> tuple[int, int]:
        from transformers.models.video_llama_3.video_processing_video_llama_3 import smart_resize

        if self.max_frames_kept is not None:
            frames = min(frames, self.max_frames_kept)
        budget = self.per_frame * frames if self.per_frame is not None else self.budget
        try:
            return smart_resize(height, width, self.factor, min_pixels=self.min_pixels,
                                max_pixels=budget * self.factor**2 // frames)
        except ValueError:  # an aspect ratio the processor refuses: it says so itself, with the frames as they are
            return height, width


def video_frame_size(processor, settings: MediaSettings) -> FrameSizer | None:
    """The `FrameSizer` of this processor's video processor under these settings (None: no video processor).

    Under a video compressor the frames share the processor's own budget (the vision encoder's), and
    max_visual_tokens (the LLM's tokens) only limits how many frames are kept.
    """
    video = getattr(processor, "video_processor", None)
    if video is None:
        return None
    factor = int(video.patch_size) * int(video.merge_size)
    min_pixels = int(video.size["shortest_edge"])
    own = int(video.size["longest_edge"]) // factor**2
    compressor = video_compressor_of(processor)
    if compressor is not None:
        kept = compressor.max_frames_within(settings.max_visual_tokens) if settings.max_visual_tokens else None
        return FrameSizer(factor, min_pixels, own, kept, compressor.encoder_frame_tokens)
    budget = settings.max_visual_tokens or own
    floor = max(1, min_pixels // factor**2)
    kept = max(1, budget // floor) if settings.max_visual_tokens is not None else None
    return FrameSizer(factor, min_pixels, budget, kept)


def with_image_merge(processor, merge_size: int | None):
    """The processor, or a shallow copy whose image processor merges `merge_size` x `merge_size` patches.

    A per-call `images_kwargs={"merge_size": 2}` is not enough: the processor counts the
    <|image_pad|> tokens it writes with its image processor's own merge size, so the text would get
    4x the tokens the model makes features for. The copy changes both, and scales the pixel limits
    so that the token limits stay as they were (VideoLLaMA3 budgets images in tokens).
    """
    images = getattr(processor, "image_processor", None)
    if merge_size is None or images is None or int(images.merge_size) == merge_size:
        return processor
    scale = (merge_size / int(images.merge_size)) ** 2
    images = copy.copy(images)
    images.size = SizeDict(
        shortest_edge=int(images.size["shortest_edge"] * scale), longest_edge=int(images.size["longest_edge"] * scale)
    )
    images.merge_size = merge_size
    processor = copy.copy(processor)
    processor.image_processor = images
    return processor


class ProcessorCall:
    """Runs the processor on one rendered conversation with given frames and a per-video token budget.

    With a video compressor (`vidlab.inputs.compressed`) the budget is the vision encoder's (how large
    the frames are), the prompt gets the compressor's layout, and DiffFP does not apply.
    """

    def __init__(self, processor, text: str, images: list[Image.Image], compression: bool):
        self.compressor = video_compressor_of(processor)
        self.processor = layout_processor(processor, self.compressor) if self.compressor else processor
        self.video_token_id = getattr(processor, "video_token_id", None)
        self.text = text
        self.images = images
        self.compression = compression and self.compressor is None
        video = getattr(processor, "video_processor", None)
        merge, patch = (int(video.merge_size), int(video.patch_size)) if video is not None else (2, 14)
        self.block = (patch * merge) ** 2  # pixels of one video token
        size = video.size if video is not None else {"shortest_edge": self.block, "longest_edge": self.block}
        self.shortest_edge = int(size["shortest_edge"])  # pixels of the smallest frame
        self.own_budget = int(size["longest_edge"]) // self.block  # tokens per video
        self.min_tokens_per_frame = max(1, self.shortest_edge // self.block)

    def __call__(self, clips: list[VideoClip], budget: int) -> dict[str, torch.Tensor]:
        kwargs: dict[str, Any] = {}
        if clips:
            kwargs["videos"] = [clip.frames for clip in clips]
            kwargs["video_metadata"] = [video_metadata(clip) for clip in clips]
            # The video processor's size["longest_edge"] is the pixel budget of a whole video, divided
            # by its frame count inside; a per-call size overrides the processor's own for this call only.
            kwargs["videos_kwargs"] = {
                "size": {"shortest_edge": self.shortest_edge, "longest_edge": budget * self.block},
                "use_token_compression": self.compression,
                # Frames are (frames, height, width, 3). Left to guess, the processor takes the layout
                # of the first video for all, and a video 3 pixels high looks channels-first.
                "input_data_format": "channels_last",
            }
        if self.images:
            kwargs["images"] = self.images
        try:
            batch = self.processor(text=[self.text], return_tensors="pt", padding=False, **kwargs)
        except ValueError as err:  # e.g. an image or video with an aspect ratio above 200
            raise MediaError(f"the processor cannot use this sample's media ({err})") from err
        tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        if self.compressor is not None:
            tensors.pop("video_compression_mask", None)  # all ones without DiffFP; the compressor decides
        return tensors

    def encoder_budget(self, clips: list[VideoClip]) -> int:
        """Tokens the frames of a video share under a compressor: the processor's own budget, or
        encoder_frame_tokens per frame (of the longest video: one budget serves every video of a call)."""
        if self.compressor is None or self.compressor.encoder_frame_tokens is None:
            return self.own_budget
        return self.compressor.encoder_frame_tokens * max((len(clip) for clip in clips), default=1)

    @staticmethod
    def length(tensors: dict[str, torch.Tensor]) -> int:
        return int(tensors["input_ids"].shape[1])

    @staticmethod
    def tokens_per_frame(tensors: dict[str, torch.Tensor]) -> list[int]:
        """Tokens of each video's frames before DiffFP."""
        if "video_grid_thw" not in tensors:
            return []
        grid, merges = tensors["video_grid_thw"], tensors["video_merge_sizes"]
        return ((grid[:, 1] * grid[:, 2]) // merges**2).tolist()

    def video_tokens(self, tensors: dict[str, torch.Tensor]) -> int:
        """Video tokens the LLM sees: after DiffFP, or the compressor's."""
        if self.compressor is not None:
            return int((tensors["input_ids"] == self.video_token_id).sum())
        mask = tensors.get("video_compression_mask")
        return 0 if mask is None else int(mask.sum())

    @staticmethod
    def image_tokens(tensors: dict[str, torch.Tensor]) -> int:
        if "image_grid_thw" not in tensors:
            return 0
        return int((tensors["image_grid_thw"].prod(-1) // tensors["image_merge_sizes"] ** 2).sum())
