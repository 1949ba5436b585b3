"""Samples -> one padded batch: right padding for training, left padding for generation."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from vidlab.conversation import Conversation
from vidlab.inputs.encode import TEXT_KEYS, InputStats, Sample, encode
from vidlab.inputs.labels import IGNORE_INDEX
from vidlab.inputs.load import LoadedMedia
from vidlab.settings import MediaSettings

# The processor's vision tensors, concatenated over a batch in sample order: the model matches
# them to the <|video_pad|> / <|image_pad|> tokens in that order.
VISION_KEYS = (
    "pixel_values_videos",
    "video_grid_thw",
    "video_merge_sizes",
    "video_compression_mask",
    "pixel_values",
    "image_grid_thw",
    "image_merge_sizes",
)


@dataclass
class Batch:
    """Samples padded into one batch: `model(**batch.tensors)` or `model.generate(**batch.tensors)`."""

    tensors: dict[str, torch.Tensor]
    stats: list[InputStats]  # per sample, in order
    texts: list[str]  # per sample, the rendered conversation before expansion
    video_keys: list[Hashable | None] = field(default_factory=list)  # per video of the batch, in order

    def __len__(self) -> int:
        return len(self.stats)


def collate(samples: Sequence[Sample], pad_token_id: int, padding_side: Literal["left", "right"] = "right") -> Batch:
    """Pad the samples' token tensors to the longest and concatenate their vision tensors.

    Left padding puts every prompt's last token in the last column, so generation continues all of
    them from the same position; training pads on the right. Labels pad with -100.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    longest = max(len(sample) for sample in samples)
    fill = {"input_ids": int(pad_token_id), "attention_mask": 0, "labels": IGNORE_INDEX}
    tensors: dict[str, torch.Tensor] = {}
    for key in TEXT_KEYS:
        if key not in samples[0].tensors:
            continue
        padded = torch.full((len(samples), longest), fill[key], dtype=torch.long)
        for row, sample in enumerate(samples):
            n = len(sample)
            if padding_side == "left":
                padded[row, longest - n :] = sample.tensors[key]
            else:
                padded[row, :n] = sample.tensors[key]
        tensors[key] = padded
    extra = [k for s in samples for k in s.tensors if k not in TEXT_KEYS and k not in VISION_KEYS]
    for key in (*VISION_KEYS, *dict.fromkeys(extra)):
        parts = [s.tensors[key] for s in samples if key in s.tensors]
        if parts:
            tensors[key] = torch.cat(parts, dim=0)
    return Batch(tensors=tensors, stats=[s.stats for s in samples], texts=[s.text for s in samples],
                 video_keys=[key for s in samples for key in s.video_keys])


def build_inputs(
    conversation: Conversation, media: list[LoadedMedia], processor, settings: MediaSettings = MediaSettings()
) -> Batch:
    """A batch of one conversation, ready for generation (see `encode`)."""
    return collate([encode(conversation, media, processor, settings)], processor.tokenizer.pad_token_id, "left")
