"""What every `vidlab` command group shares: quiet library logs, one-line user errors, the media options.

The media options' help texts and defaults come from `vidlab.settings`: an option that is not given
is None here, and `media_settings` then leaves the library default in place.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from vidlab.errors import VidlabError
from vidlab.settings import GenerationOptions, MediaSettings, build, option_help


def quiet_transformers() -> None:
    """Hide transformers' info logs and loading bars; vidlab prints its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def run_app(app: typer.Typer) -> None:
    """Run a typer app; a user error prints one clear line (no traceback) and exits with status 2."""
    # transformers imports torchao when it is installed, and torch logs a deprecation about torchao's enums at
    # warning level: noise about library internals that would sit above every message of ours.
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    try:
        app()
    except VidlabError as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise SystemExit(2) from None


def _media_help(name: str) -> str:
    return option_help(MediaSettings, name)


FpsOption = Annotated[float | None, typer.Option(help=_media_help("fps"), show_default=False)]
MaxFramesOption = Annotated[int | None, typer.Option(help=_media_help("max_frames"), show_default=False)]
MinFramesOption = Annotated[int | None, typer.Option(help=_media_help("min_frames"), show_default=False)]
NumFramesOption = Annotated[int | None, typer.Option(help=_media_help("num_frames"), show_default=False)]
FolderFpsOption = Annotated[float | None, typer.Option(help=_media_help("folder_fps"), show_default=False)]
MaxVisualTokensOption = Annotated[
    int | None, typer.Option(help=_media_help("max_visual_tokens"), show_default=False)
]
ImageMergeSizeOption = Annotated[int | None, typer.Option(help=_media_help("image_merge_size"), show_default=False)]
FrameRuleOption = Annotated[str | None, typer.Option(help=_media_help("frame_rule"), show_default=False)]
KeyframesOption = Annotated[bool, typer.Option("--keyframes", help=_media_help("keyframes"))]
PreciseTimeOption = Annotated[
    bool | None, typer.Option("--precise-time/--seek-time", help=_media_help("precise_time"), show_default=False)
]
AllowPartialOption = Annotated[bool, typer.Option("--allow-partial", help=_media_help("allow_partial"))]
DecoderOption = Annotated[str | None, typer.Option(help=_media_help("decoder"), show_default=False)]
QuantizeOption = Annotated[
    str | None,
    typer.Option(help="8bit or 4bit LLM weights (bitsandbytes on a GPU; on a CPU 8bit, through torchao).",
                 show_default=False),
]
NoCompressionOption = Annotated[
    bool, typer.Option("--no-compression", help="Keep every video token (turn DiffFP pruning off).")
]


def media_settings(
    *,
    fps: float | None = None,
    max_frames: int | None = None,
    min_frames: int | None = None,
    num_frames: int | None = None,
    folder_fps: float | None = None,
    max_visual_tokens: int | None = None,
    image_merge_size: int | None = None,
    no_compression: bool = False,
    frame_rule: str | None = None,
    keyframes: bool = False,
    allow_partial: bool = False,
    decoder: str | None = None,
    precise_time: bool | None = None,
) -> MediaSettings:
    """MediaSettings from CLI options (None: not given). A bad value is one `error:` line naming its flag."""
    if max_frames is not None and num_frames is not None:
        raise typer.BadParameter("give --max-frames or --num-frames, not both")
    values = {
        "fps": fps, "max_frames": max_frames, "min_frames": min_frames, "num_frames": num_frames,
        "folder_fps": folder_fps, "max_visual_tokens": max_visual_tokens, "image_merge_size": image_merge_size,
        "compression": False if no_compression else None,
        "frame_rule": frame_rule, "keyframes": keyframes or None, "allow_partial": allow_partial or None,
        "decoder": decoder, "precise_time": precise_time,
    }
    return build(MediaSettings, values, name=lambda field: "--" + field.replace("_", "-"))


MaxNewTokensOption = Annotated[
    int | None, typer.Option(help=option_help(GenerationOptions, "max_new_tokens"), show_default=False)
]
TemperatureOption = Annotated[
    float | None, typer.Option(help=option_help(GenerationOptions, "temperature"), show_default=False)
]
TopPOption = Annotated[float | None, typer.Option(help=option_help(GenerationOptions, "top_p"), show_default=False)]


def generation_options(
    *, max_new_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None
) -> GenerationOptions:
    """GenerationOptions from CLI options (None: not given)."""
    values = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
    return build(GenerationOptions, values, name=lambda field: "--" + field.replace("_", "-"))
