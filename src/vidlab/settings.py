"""How media become tokens: one typed object, with its defaults and their one-line docs, written once.

`Sampling` says which frames to take from a video; `MediaSettings` adds how frames and images
become visual tokens (budget, image merge size, DiffFP). The training config's `data` section is a
`MediaSettings` with training keys added; `vidlab chat`, `vidlab eval` and the quickstart build one
from their options, where an option that is not given means this default. Nothing else writes one.

The clip window (start/end seconds) is not a setting: it belongs to one video of one record (or
one chat question), so it travels with the media part.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vidlab.errors import SettingsError
from vidlab.validation import describe_errors

# Decoding ahead (eval's threads, training's DataLoader processes): one per core this process may use, at
# most 8 (past that a GPU waits on nothing, and every training worker holds its own copy of the libraries).
DECODE_WORKERS = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)

# Positive finite seconds / rates: `inf` or `nan` from a CLI option or a YAML `.inf` would only fail later, deep inside.
_RATE = {"gt": 0, "allow_inf_nan": False}
# A setting of how this machine reads its files rather than of what is asked: a server takes it from its operator
# (`vidlab serve --decoder ...`), never from a request. Every other field is also a request key (`request_fields`).
_OPERATOR = {"json_schema_extra": {"per_request": False}}


class Sampling(BaseModel):
    """Which frames to take from a video (VideoLLaMA3's rule by default: 1 fps, at most 180 frames)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fps: float = Field(1.0, **_RATE, description="Video frames sampled per second of video.")
    max_frames: int = Field(180, ge=1, description="At most this many frames per video; more are thinned evenly.")
    min_frames: int = Field(
        1, ge=1, description="At least this many frames per video (when it has them), evenly spaced."
    )
    num_frames: int | None = Field(
        None, ge=1, description="Exactly this many evenly spaced frames instead (fps and max_frames are then unused)."
    )
    folder_fps: float = Field(
        3.0, **_RATE, **_OPERATOR,
        description="Frame rate of videos stored as folders of frame images (VideoLLaMA3 extracts at 3).",
    )
    frame_rule: Literal["videollama3", "on_screen", "uniform", "stride"] = Field(
        "videollama3", description="videollama3: the frames and stamps of VideoLLaMA3's own loader, which the released "
        "models were trained with; on_screen: the frame on screen at each tick, stamped with its true time; uniform: "
        "TinyLLaVA-Video's loader: num_frames (or one per whole second, at most max_frames) spread evenly over all "
        "frames, repeated when the video has fewer; stride: LLaMA-VID's loader: every round(average rate / fps)-th "
        "frame from the first (its 1 fps), more than max_frames thinned evenly.",
    )
    precise_time: bool | None = Field(
        None, description="Clip windows as VideoLLaMA3's precise_time: true cuts after the fps filter (ticks from the "
        "file's start, as its evaluation), false seeks first (ticks from the window's start, as its training and "
        "chat); null: the command's own (vidlab eval true, the others false).",
    )
    keyframes: bool = Field(
        False, description="Take the keyframe nearest each sampled frame (no decoding between keyframes: much faster "
        "on long videos; stamped with its true time).",
    )
    allow_partial: bool = Field(
        False, **_OPERATOR, description="Use a video whose readable frames end well before the length its header "
        "states (a cut download) instead of refusing it.",
    )
    decoder: Literal["auto", "pyav", "torchcodec"] = Field(
        "auto", **_OPERATOR, description="auto: torchcodec where it is installed and faster (exact frames at their own "
        "size, from an 8-bit stream without B-frames), else PyAV; pyav: always PyAV (bundled, needs nothing); "
        "torchcodec: torchcodec for every video it can decode (pip install torchcodec; it needs FFmpeg's libraries).",
    )
    gop_workers: int | None = Field(
        None, ge=1, **_OPERATOR, description="Streams that decode one long video at once (PyAV, exact frames): this "
        "thread and worker processes, each a run of its keyframe groups; the same frames and pixels as one stream; "
        "null: one per core this process may use; 1: one stream. Videos with few keyframe groups to decode use one.",
    )

    @model_validator(mode="after")
    def _frame_counts_agree(self) -> Sampling:
        if self.min_frames > self.max_frames:
            raise ValueError(f"min_frames ({self.min_frames}) is above max_frames ({self.max_frames})")
        return self

    @field_validator("decoder")
    @classmethod
    def _decoder_installed(cls, decoder: str) -> str:
        from vidlab.media.torchcodec_decode import torchcodec_missing

        if decoder == "torchcodec" and (reason := torchcodec_missing()):
            raise ValueError(f"{reason}; or use auto / pyav")
        return decoder

    def sampling(self) -> Sampling:
        """Only the frame choice (for an object of a subclass)."""
        return Sampling(**{name: getattr(self, name) for name in Sampling.model_fields})


class MediaSettings(Sampling):
    """Frame choice plus how frames and images become visual tokens."""

    max_visual_tokens: int | None = Field(
        None, ge=1, description="Visual tokens one video may use, shared by its frames (null: the processor's own "
        "budget; VideoLLaMA3 trains with 10240 and evaluates with 16384).",
    )
    image_merge_size: Literal[1, 2] | None = Field(
        None, description="Image tokens per 14x14 (1) or 28x28 (2) pixel block; null: the processor's own "
        "(VideoLLaMA3 uses 1 in stages 1-3, 2 in stage 4).",
    )
    compression: bool = Field(
        True, description="DiffFP: drop video tokens that barely change from the previous frame (on in VideoLLaMA3)."
    )

    def media_settings(self) -> MediaSettings:
        """Only the media settings (for an object of a subclass, such as the training config's data section)."""
        return MediaSettings(**{name: getattr(self, name) for name in MediaSettings.model_fields})


def group_bounds(frames: int, groups: int) -> list[tuple[int, int]]:
    """[start, stop) of `groups` runs of consecutive frames (fewer when there are fewer frames), sizes within 1."""
    groups = min(groups, frames)
    return [(g * frames // groups, (g + 1) * frames // groups) for g in range(groups)]


class VideoCompressor(BaseModel):
    """How a video's vision features become LLM tokens: a setting of the model (kept in its config.json).

    `none` is VideoLLaMA3 as released: every merged patch, DiffFP pruning. The others sit between
    the projector and the LLM and give a fixed number of tokens per frame (`llamavid`, `pool`) or
    per video (`group_resampler`), so a long video can keep 1 fps. The token arithmetic lives here
    so that the prompt layout and the model agree by construction.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["none", "llamavid", "group_resampler", "pool"] = Field(
        "none", description="none: every merged patch (VideoLLaMA3 as released); llamavid: a context token (the "
        "question attends over the frame) and content tokens per frame; group_resampler: learnable latents per "
        "group of frames; pool: each frame average-pooled to pool_size x pool_size tokens.",
    )
    content_tokens: int = Field(
        1, ge=1, description="llamavid: content tokens per frame, the frame's features average-pooled to a square "
        "grid (1, 4, 9, ...).",
    )
    pool_size: int = Field(2, ge=1, description="pool: tokens per frame side (pool_size x pool_size per frame).")
    groups: int = Field(
        16, ge=1,
        description="group_resampler: groups of consecutive frames per video (fewer when it has fewer frames).",
    )
    latents: int = Field(32, ge=1, description="group_resampler: learnable latent tokens per group.")
    layers: int = Field(
        3, ge=1, description="group_resampler: Perceiver layers (latents cross-attend to their group)."
    )
    heads: int = Field(
        8, ge=1, description="llamavid and group_resampler: attention heads (must divide the LLM width)."
    )
    position_code: Literal["sinusoidal", "none"] = Field(
        "sinusoidal", description="group_resampler: add a sinusoidal code of each frame's place in its group, and "
        "of each patch's row and column, to the features the latents attend to.",
    )
    encoder_frame_tokens: int | None = Field(
        None, ge=1, description="Merged patches per frame the vision encoder sees (each frame resized to about "
        "this many); null: the processor's video budget, shared by the frames as without a compressor.",
    )
    encoder_chunk_frames: int = Field(
        64, ge=1, description="Frames the vision encoder takes at once (memory stays bounded on long videos; the "
        "result is the same, frames attend only within themselves).",
    )

    @model_validator(mode="after")
    def _square_content(self) -> VideoCompressor:
        side = round(self.content_tokens**0.5)
        if side * side != self.content_tokens:
            raise ValueError(f"content_tokens {self.content_tokens} is not a square number; use 1, 4, 9, 16, ...")
        return self

    def describe(self) -> str:
        """The kind and the settings that apply to it, e.g. `group_resampler (groups 16, latents 32, ...)`."""
        used = {"llamavid": ("content_tokens", "heads"), "pool": ("pool_size",),
                "group_resampler": ("groups", "latents", "layers", "heads", "position_code")}.get(self.kind)
        if used is None:
            return self.kind
        shown = [*used, *(["encoder_frame_tokens"] if self.encoder_frame_tokens else []), "encoder_chunk_frames"]
        return f"{self.kind} (" + ", ".join(f"{name} {getattr(self, name)}" for name in shown) + ")"

    @classmethod
    def kinds(cls) -> tuple[str, ...]:
        """Every kind, none first."""
        return get_args(cls.model_fields["kind"].annotation)

    @classmethod
    def weighted_kinds(cls) -> tuple[str, ...]:
        """The kinds whose module has weights that training learns (pool only averages)."""
        return ("llamavid", "group_resampler")

    @property
    def active(self) -> bool:
        """Whether a compressor sits between the projector and the LLM (kind is not none)."""
        return self.kind != "none"

    @property
    def has_weights(self) -> bool:
        """Whether its module has weights to train (and so needs learning_rates.compressor when new)."""
        return self.kind in self.weighted_kinds()

    @property
    def needs_question(self) -> bool:
        """llamavid's context token is computed from the question asked with the video."""
        return self.kind == "llamavid"

    def frame_tokens(self) -> int:
        """LLM tokens per frame (llamavid, pool); group_resampler has tokens per group instead."""
        if self.kind == "llamavid":
            return 1 + self.content_tokens
        if self.kind == "pool":
            return self.pool_size**2
        raise ValueError(f"video_compressor {self.kind} has no fixed tokens per frame")

    def group_bounds(self, frames: int) -> list[tuple[int, int]]:
        """group_resampler: [start, stop) frame indices of each group of a video of `frames` frames."""
        return group_bounds(frames, self.groups)

    def visual_tokens(self, frames: int) -> int:
        """LLM tokens of a video of `frames` frames (not for kind none, whose count depends on the frame size)."""
        if self.kind == "group_resampler":
            return min(self.groups, frames) * self.latents
        return frames * self.frame_tokens()

    def max_frames_within(self, tokens: int) -> int | None:
        """Most frames a video can keep within `tokens` LLM tokens (None: any number, for group_resampler)."""
        if self.kind == "group_resampler":
            return None
        return max(1, tokens // self.frame_tokens())


class GenerationOptions(BaseModel):
    """Decoding settings. Greedy unless temperature > 0; the sampling defaults are VideoLLaMA3's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(512, ge=1, description="Longest answer, in tokens.")
    temperature: float = Field(0.0, ge=0, allow_inf_nan=False, description="0 is greedy; above 0 samples.")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling mass when sampling.")
    top_k: int = Field(20, ge=0, description="Sample among this many most likely tokens when sampling (0: all).")
    min_new_tokens: int = Field(0, ge=0, description="Shortest answer, in tokens (the end token is held back).")
    repetition_penalty: float = Field(
        1.0, gt=0, allow_inf_nan=False, description="Above 1 makes tokens already in the text less likely (1: off)."
    )
    ignore_eos: bool = Field(False, description="Go on past the end token, up to max_new_tokens.")

    def to_kwargs(self) -> dict:
        """Keyword arguments of `model.generate`."""
        extra = {}
        if self.min_new_tokens:
            extra["min_new_tokens"] = min(self.min_new_tokens, self.max_new_tokens)
        if self.repetition_penalty != 1.0:
            extra["repetition_penalty"] = self.repetition_penalty
        if self.ignore_eos:
            extra["min_new_tokens"] = self.max_new_tokens  # the end token is held back until the last step
        if self.temperature == 0:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False, "temperature": None,
                    "top_p": None, "top_k": None, **extra}
        return {"max_new_tokens": self.max_new_tokens, "do_sample": True, "temperature": self.temperature,
                "top_p": self.top_p, "top_k": self.top_k, **extra}


Model = TypeVar("Model", bound=BaseModel)


def build(model: type[Model], values: dict[str, Any], name: Callable[[str], str] = str) -> Model:
    """`model(**values)` with the values that were given (None: not given, the default applies).

    Raises:
        SettingsError: one line listing every bad value, e.g. "--fps: input should be a finite number".
    """
    given = {key: value for key, value in values.items() if value is not None}
    try:
        return model(**given)
    except ValidationError as err:
        raise SettingsError("; ".join(describe_errors(err, name))) from None


def option_help(model: type[BaseModel], name: str) -> str:
    """A field's description and its default, for `--help` (so the help text is the schema's)."""
    field = model.model_fields[name]
    default = field.default
    shown = "none" if default is None else str(default).lower() if isinstance(default, bool) else f"{default:g}" \
        if isinstance(default, float) else str(default)
    return f"{field.description} Default: {shown}."


def flag(name: str) -> str:
    """A field's command-line option: max_frames -> --max-frames."""
    return "--" + name.replace("_", "-")


def changed_flags(values: BaseModel) -> list[str]:
    """The options that rebuild `values` from the defaults: one per field that differs from its default, e.g.
    ["--fps", "2", "--no-compression"] (a true/false field is `--name` or `--no-name`)."""
    args: list[str] = []
    for name, field in type(values).model_fields.items():
        value = getattr(values, name)
        if value == field.get_default(call_default_factory=True):
            continue
        if isinstance(value, bool):
            args.append(flag(name) if value else flag("no_" + name))
        else:
            args += [flag(name), f"{value:g}" if isinstance(value, float) else str(value)]
    return args


def request_fields(model: type[BaseModel]) -> list[str]:
    """The fields a request may set (a server's per-request keys): all but those its operator alone decides."""
    return [name for name, field in model.model_fields.items()
            if (field.json_schema_extra or {}).get("per_request", True)]
