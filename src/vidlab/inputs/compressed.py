"""The prompt of a video under a video compressor: how many <|video_pad|> tokens follow each stamp.

The native processor writes `Time X.Xs:` and one <|video_pad|> per kept patch for each frame. With
a compressor (`vidlab.settings.VideoCompressor`, read from the model's config.json by vidlab's
loader and kept on the processor) each frame gets the compressor's tokens instead (llamavid: 1
context + content tokens; pool: k x k), or, for group_resampler, each group of frames gets
`Time A-Bs:` (the stamps of its first and last frame) and its latents. The layout comes from the
same `VideoCompressor` methods the model's compressor follows, so the two cannot disagree.

llamavid's context tokens are computed from the question the video came with: the text of the
user turn that holds it (`question_ids`). A follow-up question in a chat reuses them (the video's
tokens are part of the conversation so far); ask again with the video to condition on a new question.
"""

from __future__ import annotations

import copy

import torch
from transformers import VideoLlama3Processor

from vidlab.conversation import Conversation
from vidlab.settings import VideoCompressor


def stamp(seconds: float) -> str:
    return f"Time {seconds:.1f}s:"


def span_stamp(first: float, last: float) -> str:
    return stamp(first) if first == last else f"Time {first:.1f}-{last:.1f}s:"


def video_segments(spec: VideoCompressor, stamps: list[float]) -> list[tuple[str, int]]:
    """(stamp text, tokens after it) for each frame, or for each group of frames (group_resampler)."""
    if spec.kind == "group_resampler":
        return [(span_stamp(stamps[start], stamps[stop - 1]), spec.latents)
                for start, stop in spec.group_bounds(len(stamps))]
    return [(stamp(t), spec.frame_tokens()) for t in stamps]


def video_prompt(spec: VideoCompressor, stamps: list[float], token: str) -> str:
    """What replaces a video's placeholder in the text (frames or groups separated by commas, as VideoLLaMA3)."""
    return ",".join(text + token * count for text, count in video_segments(spec, stamps))


class CompressedLayoutProcessor(VideoLlama3Processor):
    """The native processor whose video placeholders expand to the compressor's layout."""

    video_compressor: VideoCompressor

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs) -> str:
        stamps = list(video_inputs["video_metadata"][video_idx].timestamps)
        return video_prompt(self.video_compressor, stamps, self.video_token)


def layout_processor(processor, spec: VideoCompressor):
    """A shallow copy of the processor that writes the compressor's layout (the original stays as it is,
    so that it saves and loads as the native class)."""
    copied = copy.copy(processor)
    copied.__class__ = CompressedLayoutProcessor
    copied.video_compressor = spec
    return copied


def question_ids(conversation: Conversation, tokenizer) -> list[list[int]]:
    """Per video, in order: the token ids of the text of the user turn that holds it (llamavid's question)."""
    found = []
    for turn in conversation.turns:
        for part in turn.media:
            if part.type == "video":
                found.append(tokenizer(turn.text.strip(), add_special_tokens=False)["input_ids"])
    return found


def question_tensors(ids: list[list[int]]) -> dict[str, torch.Tensor]:
    """The model inputs for the questions: every video's ids concatenated, and their count per video."""
    flat = [token for video in ids for token in video]
    return {"video_query_ids": torch.tensor(flat, dtype=torch.long),
            "video_query_lengths": torch.tensor([len(video) for video in ids], dtype=torch.long)}
