"""A request's media and decoding settings: the server's, with what the request changes, in vLLM's shapes.

    "mm_processor_kwargs": {"fps": 2, "max_frames": 64, "use_token_compression": false}
    "media_io_kwargs": {"video": {"num_frames": 16}}

Both are checked by the same `MediaSettings` / `GenerationOptions` objects every other workload
builds; nothing here has a default of its own. The keys are the settings' own field names
(`request_fields`: all but those the server's operator alone decides): `mm_processor_kwargs` takes
every media setting, `media_io_kwargs.video` the frame choice (`Sampling`'s).
"""

from __future__ import annotations

from typing import Any

from vidlab.errors import SettingsError
from vidlab.serve.errors import ServeError
from vidlab.serve.options import ServeOptions
from vidlab.serve.protocol import ChatRequest
from vidlab.settings import GenerationOptions, MediaSettings, Sampling, build, request_fields

# mm_processor_kwargs key -> MediaSettings field (the processor's own name for DiffFP is accepted too).
PROCESSOR_KEYS = {**{name: name for name in request_fields(MediaSettings)}, "use_token_compression": "compression"}
# media_io_kwargs.video key -> MediaSettings field: the frame choice.
VIDEO_IO_KEYS = {name: name for name in request_fields(Sampling)}
# Fields that choose frames by rate; a request that sets one of them and not num_frames means rate sampling.
_RATE_FIELDS = ("fps", "max_frames")


def _overrides(request: ChatRequest) -> tuple[dict[str, Any], dict[str, str]]:
    """MediaSettings fields the request sets, and the request key each came from."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}

    def take(key: str, field: str, value: Any, where: str) -> None:
        if field in values and values[field] != value:
            raise ServeError(
                400, f"{where}: {value!r} disagrees with {origin[field]} ({values[field]!r}). Give it once.",
                code="invalid_settings", param=where,
            )
        values[field], origin[field] = value, where

    for key, value in (request.mm_processor_kwargs or {}).items():
        if key not in PROCESSOR_KEYS:
            raise ServeError(
                400, f"mm_processor_kwargs.{key}: unknown setting. Use some of: {', '.join(PROCESSOR_KEYS)}.",
                code="invalid_settings", param=f"mm_processor_kwargs.{key}",
            )
        take(key, PROCESSOR_KEYS[key], value, f"mm_processor_kwargs.{key}")
    for kind, settings in (request.media_io_kwargs or {}).items():
        known = VIDEO_IO_KEYS if kind == "video" else {}
        for key, value in settings.items():
            if key not in known:
                allowed = f"video: {', '.join(VIDEO_IO_KEYS)}"
                raise ServeError(400, f"media_io_kwargs.{kind}.{key}: unknown setting. Use {allowed}.",
                                 code="invalid_settings", param=f"media_io_kwargs.{kind}.{key}")
            take(key, known[key], value, f"media_io_kwargs.{kind}.{key}")
    return values, origin


_FRAME_FIELDS = ("num_frames", "max_frames", "min_frames")


def media_settings(request: ChatRequest, defaults: MediaSettings, options: ServeOptions | None = None) -> MediaSettings:
    """The server's media settings with the request's changes, within the server's ceilings (`options`).

    Raises:
        ServeError: 400 naming the request key (an unknown key, a value out of range, a key given twice, a
            frame count or visual-token budget over the server's limit).
    """
    values, origin = _overrides(request)
    merged = defaults.model_dump()
    if any(field in values for field in _RATE_FIELDS) and "num_frames" not in values:
        merged["num_frames"] = None  # the request asks for rate sampling: the server's fixed count does not apply
    merged.update(values)
    try:
        settings = build(MediaSettings, merged, name=lambda field: origin.get(field, f"server setting {field}"))
    except SettingsError as err:
        param = next(iter(origin.values()), "mm_processor_kwargs")
        raise ServeError(400, f"{err}. Fix the request's settings.", code="invalid_settings", param=param) from None
    if options is not None:
        _within_ceilings(settings, origin, options)
    return settings


def _within_ceilings(settings: MediaSettings, origin: dict[str, str], options: ServeOptions) -> None:
    for field in _FRAME_FIELDS:
        value = getattr(settings, field)
        if value is not None and value > options.max_video_frames:
            where = origin.get(field, f"mm_processor_kwargs.{field}")
            raise ServeError(400, f"{where}: {value} frames per video is over the server's limit of "
                             f"{options.max_video_frames} (max_video_frames). Ask for fewer frames.",
                             code="too_many_frames", param=where)
    tokens = settings.max_visual_tokens
    if tokens is not None and tokens > options.max_request_visual_tokens:
        where = origin.get("max_visual_tokens", "mm_processor_kwargs.max_visual_tokens")
        raise ServeError(400, f"{where}: {tokens} visual tokens is over the server's limit of "
                         f"{options.max_request_visual_tokens} per request (max_request_visual_tokens). Ask for "
                         "fewer.", code="too_many_visual_tokens", param=where)


_GENERATION_NAMES = {"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens"}


def generation_options(request: ChatRequest, defaults: GenerationOptions) -> GenerationOptions:
    """The server's decoding settings with the request's max_tokens, temperature, top_p, top_k (-1: off, as
    vLLM), min_tokens, repetition_penalty and ignore_eos.

    Raises:
        ServeError: 400 naming the field.
    """
    values = defaults.model_dump()
    top_k = 0 if request.top_k == -1 else request.top_k
    given = {
        "max_new_tokens": request.max_completion_tokens or request.max_tokens,
        "temperature": request.temperature, "top_p": request.top_p, "top_k": top_k,
        "min_new_tokens": request.min_tokens, "repetition_penalty": request.repetition_penalty,
        "ignore_eos": request.ignore_eos,
    }
    values.update({key: value for key, value in given.items() if value is not None})
    try:
        return build(GenerationOptions, values, name=lambda field: _GENERATION_NAMES.get(field, field))
    except SettingsError as err:
        text = str(err)
        param = next((name for name in (*_GENERATION_NAMES.values(), *given) if text.startswith(name)), None)
        raise ServeError(400, f"{err}. Fix the request.", code="invalid_settings", param=param) from None
