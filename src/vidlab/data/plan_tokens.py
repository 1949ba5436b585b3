"""What a video of a given length costs in tokens under each video compressor (`vidlab data tokens`).

For each option it counts, from the frame rule's arithmetic and the processor's budgets (no video
is decoded):
    frames         frames kept: floor(seconds x fps), at most max_frames, at least min_frames (the video
                   is taken to have them), at most what the visual-token budget pays for (a
                   compressor's tokens per frame)
    fps kept       frames / seconds: 1.0 means every tick of the requested rate survived
    encoder        merged patches the vision encoder makes (its work and activations)
    visual         tokens of the video the LLM reads: every merged patch for `none` (before DiffFP,
                   which removes what does not change), the compressor's tokens otherwise
    stamps         the `Time X.Xs:` text before each frame (each group for group_resampler) and the
                   commas between them, counted with the model's tokenizer
    total          visual + stamps: the video's share of the sample
The frames' size follows VideoLLaMA3's resize for the given width and height inside the budget the
frames share (`max_visual_tokens`, else the processor's own; with a compressor the processor's own,
or its encoder_frame_tokens per frame, which size the encoder's frames).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vidlab.inputs.compressed import stamp, video_segments
from vidlab.settings import MediaSettings, VideoCompressor

# The released VideoLLaMA3 video budgets (processor_config / preprocessor_config of the 2B and 7B
# models): 14-pixel patches merged 2 x 2, at least 16 and at most 16,384 tokens per video.
RELEASED_VIDEO = {"patch_size": 14, "merge_size": 2, "min_tokens": 16, "max_tokens": 16384}


def default_options() -> dict[str, VideoCompressor]:
    """The options compared: none, and each compressor at its defaults."""
    return {kind: VideoCompressor(kind=kind) for kind in VideoCompressor.kinds()}


@dataclass(frozen=True)
class VideoBudget:
    """A processor's video budgets: pixels of one token side (patch x merge), tokens per frame and video."""

    factor: int = RELEASED_VIDEO["patch_size"] * RELEASED_VIDEO["merge_size"]
    min_tokens: int = RELEASED_VIDEO["min_tokens"]  # per frame
    max_tokens: int = RELEASED_VIDEO["max_tokens"]  # per video

    @classmethod
    def of(cls, processor) -> VideoBudget:
        video = processor.video_processor
        factor = int(video.patch_size) * int(video.merge_size)
        return cls(factor, max(1, int(video.size["shortest_edge"]) // factor**2),
                   int(video.size["longest_edge"]) // factor**2)

    def frame_tokens(self, width: int, height: int, frames: int, budget: int) -> int:
        """Merged patches of one frame when `frames` frames share `budget` tokens (VideoLLaMA3's smart_resize)."""
        from transformers.models.video_llama_3.video_processing_video_llama_3 import smart_resize

        resized_h, resized_w = smart_resize(height, width, self.factor, min_pixels=self.min_tokens * self.factor**2,
                                            max_pixels=budget * self.factor**2 // max(frames, 1))
        return (resized_h // self.factor) * (resized_w // self.factor)


@dataclass(frozen=True)
class TokenCost:
    """One option's cost for one video (see the module docstring)."""

    option: str
    compressor: str
    frames: int
    fps_kept: float
    encoder_tokens: int
    visual_tokens: int
    stamp_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.visual_tokens + self.stamp_tokens

    def to_dict(self) -> dict:
        return {**asdict(self), "total_tokens": self.total_tokens}


def _stamp_tokens(tokenizer, spec: VideoCompressor, stamps: list[float]) -> int:
    if spec.active:
        text = ",".join(label for label, _ in video_segments(spec, stamps))
    else:
        text = ",".join(stamp(t) for t in stamps)
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def video_token_cost(
    seconds: float,
    tokenizer,
    options: dict[str, VideoCompressor] | None = None,
    settings: MediaSettings = MediaSettings(),
    budget: VideoBudget = VideoBudget(),
    width: int = 640,
    height: int = 360,
) -> list[TokenCost]:
    """The cost of a `seconds`-long video of width x height pixels under each option (default: `default_options`).

    Frames are the frame rule's ticks, floor(seconds x fps), thinned to max_frames and topped up to min_frames
    (num_frames when set).
    """
    options = options or default_options()
    ticks = int(seconds * settings.fps + 1e-9) if settings.num_frames is None else settings.num_frames
    costs = []
    for name, spec in options.items():
        frames = max(1, min(ticks, settings.num_frames or settings.max_frames))
        if settings.num_frames is None:
            frames = max(frames, settings.min_frames)
        if spec.active:
            if settings.max_visual_tokens is not None and (most := spec.max_frames_within(settings.max_visual_tokens)):
                frames = min(frames, most)
            shared = frames * spec.encoder_frame_tokens if spec.encoder_frame_tokens else budget.max_tokens
            encoder = frames * budget.frame_tokens(width, height, frames, shared)
            visual = spec.visual_tokens(frames)
        else:
            shared = settings.max_visual_tokens or budget.max_tokens
            if settings.max_visual_tokens is not None:  # fewer frames when the budget cannot pay for them all
                frames = min(frames, max(1, shared // budget.min_tokens))
            encoder = visual = frames * budget.frame_tokens(width, height, frames, shared)
        stamps = [i * seconds / frames for i in range(frames)]  # evenly spread; the count, not the digits, matters
        costs.append(TokenCost(name, spec.describe(), frames, round(frames / max(seconds, 1e-9), 3), encoder, visual,
                               _stamp_tokens(tokenizer, spec, stamps)))
    return costs


def render_token_costs(seconds: float, costs: list[TokenCost], note: str = "") -> str:
    """The costs as an aligned table."""
    lines = [f"a {seconds:g}-second video ({seconds / 60:g} min)",
             f"{'option':<16} {'frames':>7} {'fps kept':>8} {'encoder':>9} {'visual':>8} {'stamps':>8} {'total':>8}"]
    for cost in costs:
        lines.append(f"{cost.option:<16} {cost.frames:>7} {cost.fps_kept:>8.3g} {cost.encoder_tokens:>9} "
                     f"{cost.visual_tokens:>8} {cost.stamp_tokens:>8} {cost.total_tokens:>8}")
    lines += ["", "encoder: merged patches the vision encoder makes; visual: tokens the LLM reads (none: before DiffFP "
              "pruning); stamps: the Time X.Xs: text."]
    for cost in costs:
        lines.append(f"  {cost.option}: {cost.compressor}")
    if note:
        lines.append(note)
    return "\n".join(lines)


def plan_video_tokens(
    seconds: float,
    model: str | None = None,
    settings: MediaSettings = MediaSettings(),
    options: dict[str, VideoCompressor] | None = None,
    width: int = 640,
    height: int = 360,
) -> tuple[list[TokenCost], str]:
    """`video_token_cost` with a model's processor (its budgets and tokenizer; a model with a compressor adds
    its own as the option "model"), or, without one, the released VideoLLaMA3 budgets and a tokenizer that
    splits digits as Qwen2.5's does (vidlab's tiny one). Returns the costs and a note on what was assumed.
    """
    options = dict(options or default_options())
    if model is None:
        from vidlab.models.tiny import train_tokenizer

        note = ("budgets: the released VideoLLaMA3 (16-16,384 tokens per video, 2x2 merge); stamps counted with "
                "vidlab's tiny tokenizer, which splits digits one by one as Qwen2.5's does (a real checkpoint's "
                "count may differ by about a token per stamp: give --model).")
        return video_token_cost(seconds, train_tokenizer(1024), options, settings, VideoBudget(), width, height), note
    from vidlab.models.load import load_processor

    processor = load_processor(model)
    own = getattr(processor, "video_compressor", None)
    if own is not None:
        options["model"] = own
    note = f"budgets and tokenizer of {model}."
    return video_token_cost(seconds, processor.tokenizer, options, settings, VideoBudget.of(processor), width,
                            height), note
