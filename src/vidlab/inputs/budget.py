"""The token budget: a sample too long for the model gets smaller frames, then fewer; it is never cut.

A cut inside the vision tokens makes the model fail with "video features and video tokens do not
match", so `fit` instead lowers the frames' resolution (down to the processor's smallest frame),
then keeps fewer frames (evenly spaced, with their true times), down to one per video. If even
that does not fit, the sample cannot be used (SampleError).

With a video compressor the LLM's share of a video does not shrink with the frames' size (each
frame or group costs what the compressor gives it), so `max_visual_tokens` and `max_length` are
met with fewer frames only, and the frames keep the vision encoder's budget (the processor's own,
or the compressor's encoder_frame_tokens per frame).
"""

from __future__ import annotations

import dataclasses

import torch

from vidlab.errors import OverBudgetError
from vidlab.inputs.compressed import video_segments
from vidlab.inputs.processing import ProcessorCall
from vidlab.media import VideoClip
from vidlab.media.sampling import evenly_spaced
from vidlab.settings import MediaSettings

# Shrinking a sample's frames stops after this many resolution steps and goes to the smallest frames.
_MAX_RESOLUTION_STEPS = 12


def subclip(clip: VideoClip, count: int) -> VideoClip:
    """`count` evenly spaced frames of the clip, with their true times and indices."""
    if count >= len(clip):
        return clip
    keep = evenly_spaced(len(clip), count)
    return dataclasses.replace(
        clip,
        frames=clip.frames[keep],
        timestamps=[clip.timestamps[i] for i in keep],
        stamps=[clip.stamps[i] for i in keep],
        frame_indices=[clip.frame_indices[i] for i in keep],
    )


def _share(counts: list[int], total: int) -> list[int]:
    """Frames per video when the sample may have `total` frames: in proportion, at least 1 each."""
    whole = sum(counts)
    shares = [max(1, count * total // whole) for count in counts]
    while sum(shares) > max(total, len(counts)):
        biggest = max(range(len(shares)), key=lambda i: shares[i])
        shares[biggest] -= 1
    return shares


def _over_budget(length: int, limit: int, detail: str) -> str:
    return (
        f"over budget: {length} tokens > model_max_length {limit}; {detail}. Samples are never truncated (a cut "
        "inside the vision tokens breaks the model): shorten the conversation or raise model_max_length."
    )


def fit(
    call: ProcessorCall, decoded: list[VideoClip], settings: MediaSettings, max_length: int | None
) -> tuple[dict[str, torch.Tensor], list[VideoClip], str | None]:
    """Encode within the budgets; returns (tensors, the clips used, how the sample was shrunk or None).

    Each video gets at most `settings.max_visual_tokens` (else the processor's own budget); a video
    with more frames than that budget pays for at the smallest frame size keeps fewer, evenly
    spaced. Then, if the sample is longer than `max_length` (None: no limit), it shrinks as the
    module docstring says.
    """
    if call.compressor is not None:
        return _fit_compressed(call, decoded, settings, max_length)
    floor = call.min_tokens_per_frame
    budget = settings.max_visual_tokens or call.own_budget
    clips = list(decoded)
    if settings.max_visual_tokens is not None:
        most = max(1, budget // floor)
        clips = [subclip(clip, most) for clip in clips]
    tensors = call(clips, budget)
    first_per_frame = max(call.tokens_per_frame(tensors), default=0)
    length = call.length(tensors)
    limit = max_length if max_length is not None else length

    if length > limit and not clips:
        raise OverBudgetError(_over_budget(length, limit, "the sample has no video, and only video frames are shrunk"))

    # 1. Smaller frames: lower the per-video budget until it fits or every frame is at the floor.
    smallest = floor * max((len(clip) for clip in clips), default=0)
    steps = 0
    while length > limit and budget > smallest:
        steps += 1
        if steps > _MAX_RESOLUTION_STEPS:
            budget = smallest
        else:
            # Scale the budget the video actually used by the share of its tokens that may stay.
            video = call.video_tokens(tensors)
            used = max(len(clip) * tokens for clip, tokens in zip(clips, call.tokens_per_frame(tensors)))
            ratio = max(video - (length - limit), 0) / video if video else 0.0
            budget = max(smallest, min(budget - 1, int(used * ratio)))
        tensors = call(clips, budget)
        length = call.length(tensors)

    # 2. Fewer frames (evenly spaced, true times), none larger than now, until it fits.
    if length > limit:
        unexpanded = len(call.processor.tokenizer(call.text, add_special_tokens=False)["input_ids"])
        # Tokens that do not change with the frames: the text, one placeholder per video, the images.
        fixed = unexpanded - len(clips) - len(call.images) + call.image_tokens(tensors)
        # Frames stay as small as they are now (at most the floor): fewer frames must not grow them.
        per_frame_cap = max(1, min(floor, budget // max(len(clip) for clip in clips)))
        while length > limit:
            frames = sum(len(clip) for clip in clips)
            if frames <= len(clips):
                raise OverBudgetError(
                    _over_budget(
                        length, limit,
                        f"even 1 frame per video at {max(call.tokens_per_frame(tensors))} token(s) per frame "
                        f"leaves {length - call.video_tokens(tensors) - call.image_tokens(tensors)} text tokens",
                    )
                )
            per_frame = max(length - fixed, 1) / frames
            wanted = max(len(clips), min(frames - 1, int((limit - fixed) / per_frame)))
            counts = _share([len(clip) for clip in clips], wanted)
            clips = [subclip(clip, count) for clip, count in zip(decoded, counts)]
            budget = per_frame_cap * max(counts)
            tensors = call(clips, budget)
            length = call.length(tensors)

    notes = []
    before, after = sum(len(clip) for clip in decoded), sum(len(clip) for clip in clips)
    if after != before:
        notes.append(f"frames {before}->{after}")
    last_per_frame = max(call.tokens_per_frame(tensors), default=0)
    if last_per_frame != first_per_frame:
        notes.append(f"{first_per_frame}->{last_per_frame} tokens/frame")
    return tensors, clips, ", ".join(notes) or None


def _fixed_tokens(call: ProcessorCall, clips: list[VideoClip], tensors: dict[str, torch.Tensor]) -> int:
    """Tokens that do not change with the frames: the text, one placeholder per video, the images."""
    unexpanded = len(call.processor.tokenizer(call.text, add_special_tokens=False)["input_ids"])
    return unexpanded - len(clips) - len(call.images) + call.image_tokens(tensors)


def _fit_compressed(
    call: ProcessorCall, decoded: list[VideoClip], settings: MediaSettings, max_length: int | None
) -> tuple[dict[str, torch.Tensor], list[VideoClip], str | None]:
    """`fit` under a video compressor: fewer frames (evenly spaced, true times) until the budgets hold."""
    spec = call.compressor
    clips = list(decoded)
    if settings.max_visual_tokens is not None and (most := spec.max_frames_within(settings.max_visual_tokens)):
        clips = [subclip(clip, most) for clip in clips]
    tensors = call(clips, call.encoder_budget(clips))
    length = call.length(tensors)
    limit = max_length if max_length is not None else length
    if length > limit and not clips:
        raise OverBudgetError(_over_budget(length, limit, "the sample has no video, and only video frames are shrunk"))
    while length > limit:
        # A segment is what one stamp announces: a frame, or a group of frames for group_resampler.
        segments = sum(len(video_segments(spec, clip.stamps)) for clip in clips)
        if segments <= len(clips):
            raise OverBudgetError(_over_budget(
                length, limit, f"even 1 frame per video leaves {length - call.video_tokens(tensors)} other tokens"))
        fixed = _fixed_tokens(call, clips, tensors)
        per_segment = max(length - fixed, 1) / segments
        wanted = max(len(clips), min(segments - 1, int((limit - fixed) / per_segment)))
        frames = sum(len(clip) for clip in clips)
        # Below one segment per frame (fewer frames than groups) every frame is its own group.
        counts = _share([len(clip) for clip in clips], min(frames - 1, wanted))
        clips = [subclip(clip, count) for clip, count in zip(decoded, counts)]
        tensors = call(clips, call.encoder_budget(clips))
        length = call.length(tensors)
    before, after = sum(len(clip) for clip in decoded), sum(len(clip) for clip in clips)
    return tensors, clips, f"frames {before}->{after}" if after != before else None
