"""Conversation + its decoded media + settings -> one sample's tensors. The only encoder in vidlab.

Chat, evaluation, training, validation and the server all call `encode`, so a record becomes the
same tokens, pixels, grids and compression masks wherever it goes.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import torch

from vidlab.conversation import Conversation
from vidlab.errors import ConversationError, MediaError, SampleError
from vidlab.inputs.budget import fit
from vidlab.inputs.compressed import question_ids, question_tensors
from vidlab.inputs.labels import label_assistant_turns
from vidlab.inputs.load import LoadedMedia
from vidlab.inputs.processing import ProcessorCall, with_image_merge
from vidlab.media import VideoClip
from vidlab.settings import MediaSettings

TEXT_KEYS = ("input_ids", "attention_mask", "labels")  # per-token tensors: (length,) in a Sample


@dataclass
class InputStats:
    """What went into one sample: frames per video and how the tokens were spent."""

    frames: list[list[float]]  # per video, the times announced in the prompt (from the clip start)
    visual_tokens: int  # vision tokens the LLM sees (after DiffFP pruning, or the video compressor's)
    visual_tokens_before_pruning: int  # merged patches the vision encoder made, before pruning or compression
    text_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.visual_tokens + self.text_tokens


@dataclass(eq=False)
class Sample:
    """One conversation as model inputs, not padded.

    Attributes:
        tensors: input_ids and attention_mask (and labels when asked), each (length,), plus the
            processor's vision tensors for this sample (pixel_values_videos, video_grid_thw,
            video_merge_sizes, video_compression_mask, pixel_values, image_grid_thw,
            image_merge_sizes), its videos and images in order.
        stats: frames per video and token counts.
        text: the rendered conversation, one <|video_pad|> / <|image_pad|> per medium (before expansion).
        shrunk: None, or how the sample was made to fit max_length, e.g. "frames 180->64, 96->24 tokens/frame".
        video_keys: per video, what identifies its pixel values (the clip's key, the frames kept, the
            grid, the processor), or None when the clip has no key; vision features are cached by it.
    """

    tensors: dict[str, torch.Tensor]
    stats: InputStats
    text: str
    shrunk: str | None = None
    video_keys: list[Hashable | None] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.tensors["input_ids"].shape[0])


def _stats(tensors: dict[str, torch.Tensor], clips: list[VideoClip], call: ProcessorCall) -> InputStats:
    video_before = video_after = images = 0
    if "video_grid_thw" in tensors:
        video_before = int((tensors["video_grid_thw"].prod(-1) // tensors["video_merge_sizes"] ** 2).sum())
        video_after = call.video_tokens(tensors)
    if "image_grid_thw" in tensors:
        images = int((tensors["image_grid_thw"].prod(-1) // tensors["image_merge_sizes"] ** 2).sum())
    length = int(tensors["attention_mask"].sum())
    return InputStats(
        frames=[clip.stamps for clip in clips],
        visual_tokens=video_after + images,
        visual_tokens_before_pruning=video_before + images,
        text_tokens=length - video_after - images,
    )


def encode(
    conversation: Conversation,
    media: list[LoadedMedia],
    processor,
    settings: MediaSettings = MediaSettings(),
    *,
    labels: bool = False,
    max_length: int | None = None,
) -> Sample:
    """Tokens, pixels and masks for one conversation, within the token budgets.

    A conversation that ends with a user turn is a prompt: it gets `<|im_start|>assistant\\n` so the
    model answers next. One that ends with an assistant reply is whole, as in training.

    Args:
        conversation: the turns; its media parts are matched in order with `media`.
        media: what `load_media` returned for this conversation.
        processor: the model's VideoLlama3Processor.
        settings: visual-token budget, image merge size and DiffFP (frames are already chosen).
        labels: add `labels`: the assistant replies and their `<|im_end|>`, -100 elsewhere.
        max_length: most tokens (text and visual) the sample may have; a longer one gets smaller,
            then fewer frames, never cut (None: no limit).

    Raises:
        SampleError: the sample does not fit `max_length` even with one frame per video at the
            smallest size, or the processor cannot use its media; the message starts with the
            conversation's source (file:line of a record).
    """
    subtitled = any(getattr(m, "subtitles", None) is not None for m in media)
    if subtitled and not getattr(processor, "reads_subtitles", False):
        raise SampleError(f"{conversation.source}: a subtitle file came with the video, but only LLaMA-VID models put "
                          "subtitles into their prompt (its movie prompt). Leave the subtitles out, or use a LLaMA-VID "
                          "model; for Video-MME / LongVideoBench use `vidlab eval run --subtitles`.")
    family_encode = getattr(processor, "encode_conversation", None)
    if family_encode is not None:  # another model family (vidlab.models.tinyllava_video): its own tensors, same Sample
        return family_encode(conversation, media, settings, labels=labels, max_length=max_length)
    where = conversation.source
    prompt = conversation.turns[-1].role != "assistant"
    if labels and not any(turn.role == "assistant" for turn in conversation.turns):
        raise ConversationError(
            f'{where}: no assistant ("gpt") turn, so nothing to learn. Add the expected answer as a gpt turn.'
        )
    text = processor.apply_chat_template(conversation.to_messages(), tokenize=False, add_generation_prompt=prompt)
    clips = [m for m in media if isinstance(m, VideoClip)]
    images = [m for m in media if not isinstance(m, VideoClip)]
    call = ProcessorCall(with_image_merge(processor, settings.image_merge_size), text, images, settings.compression)
    try:
        tensors, used, shrunk = fit(call, clips, settings, max_length)
    except (SampleError, MediaError) as err:
        raise SampleError(f"{where}: {err}") from err
    stats = _stats(tensors, used, call)
    tensors = {k: (v[0] if k in TEXT_KEYS else v) for k, v in tensors.items()}
    if used and call.compressor is not None and call.compressor.needs_question:
        tensors.update(question_tensors(question_ids(conversation, processor.tokenizer)))
    if labels:
        tensors["labels"] = label_assistant_turns(tensors["input_ids"], processor.tokenizer)
    return Sample(tensors=tensors, stats=stats, text=text, shrunk=shrunk, video_keys=_video_keys(tensors, used, call))


def _video_keys(tensors: dict[str, torch.Tensor], clips: list[VideoClip], call: ProcessorCall) -> list:
    grids = tensors["video_grid_thw"].tolist() if clips else []
    processor = id(call.processor.video_processor) if clips else None
    return [None if clip.key is None else (clip.key, tuple(clip.frame_indices), tuple(grid), processor)
            for clip, grid in zip(clips, grids)]
