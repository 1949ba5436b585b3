"""The page's shared controls: media choice (upload or media root) and the frame / answer settings,
turned into `MediaChoice`, `MediaSettings` and `GenerationOptions`. Defaults come from vidlab.settings."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from vidlab.errors import VidlabError
from vidlab.settings import GenerationOptions, MediaSettings, build
from vidlab.web.backend import AnswerInfo, MediaChoice, Preview
from vidlab.web.media import check_size, inside, list_media, media_choice_parts
from vidlab.web.options import WebOptions

log = logging.getLogger("vidlab.web")
FRAME_MODES = ["at most", "exactly"]
_LABELS = {"fps": "fps", "max_frames": "frames", "num_frames": "frames", "max_new_tokens": "max tokens",
           "temperature": "temperature", "start": "clip start", "end": "clip end"}


def _help(model, name: str) -> str:
    return model.model_fields[name].description


@dataclass
class SettingsControls:
    fps: gr.Number
    frame_mode: gr.Radio
    frames: gr.Number
    start: gr.Number
    end: gr.Number
    compression: gr.Checkbox
    temperature: gr.Slider
    max_tokens: gr.Number
    system: gr.Textbox

    @property
    def inputs(self) -> list:
        return [self.fps, self.frame_mode, self.frames, self.start, self.end, self.compression, self.temperature,
                self.max_tokens, self.system]


def settings_controls(media: MediaSettings = MediaSettings(),
                      generation: GenerationOptions = GenerationOptions()) -> SettingsControls:
    """The settings panel (inside the caller's layout), starting from `media` and `generation`."""
    gr.Markdown("Frames and answers, for Chat and Compare. A change starts a new conversation.")
    fps = gr.Number(media.fps, label="fps", info=_help(MediaSettings, "fps"), elem_id="set-fps")
    with gr.Row():
        mode = gr.Radio(FRAME_MODES, value=FRAME_MODES[1 if media.num_frames else 0], label="frames",
                        elem_id="set-frame-mode", info="at most N spread over the video at fps, or exactly N evenly "
                        "spaced")
        frames = gr.Number(media.num_frames or media.max_frames, label="N", precision=0, minimum=1,
                           elem_id="set-frames")
    with gr.Row():
        start = gr.Number(0, label="clip start (s)", info="0: from the beginning", elem_id="set-start")
        end = gr.Number(0, label="clip end (s)", info="0: to the end", elem_id="set-end")
    compression = gr.Checkbox(media.compression, label="DiffFP",
                              info=_help(MediaSettings, "compression"), elem_id="set-difffp")
    temperature = gr.Slider(0, 2, value=generation.temperature, step=0.05, label="temperature",
                            info=_help(GenerationOptions, "temperature"), elem_id="set-temperature")
    max_tokens = gr.Number(generation.max_new_tokens, label="max tokens", precision=0, minimum=1,
                           info=_help(GenerationOptions, "max_new_tokens"), elem_id="set-max-tokens")
    system = gr.Textbox("", label="system prompt", lines=2, placeholder="none", elem_id="set-system")
    return SettingsControls(fps, mode, frames, start, end, compression, temperature, max_tokens, system)


@dataclass(frozen=True)
class Settings:
    media: MediaSettings
    generation: GenerationOptions
    start: float | None
    end: float | None
    system: str | None


def read_settings(fps, frame_mode, frames, start, end, compression, temperature, max_tokens, system, *,
                  base: MediaSettings = MediaSettings()) -> Settings:
    """The panel's values as settings objects (what the panel does not show comes from `base`); a bad value is
    one VidlabError naming its control."""
    def name(field: str) -> str:
        return _LABELS.get(field, field)

    frames = None if frames is None else int(frames)
    start, end = start or None, end or None  # an empty number box reads 0: the whole video
    values = {**base.model_dump(), "fps": fps, "compression": bool(compression), "num_frames": None}
    values["num_frames" if frame_mode == "exactly" else "max_frames"] = frames
    media = build(MediaSettings, values, name=name)
    generation = build(GenerationOptions, {"temperature": temperature,
                                           "max_new_tokens": None if max_tokens is None else int(max_tokens)},
                       name=name)
    for label, value in (("clip start", start), ("clip end", end)):
        if value is not None and value < 0:
            raise VidlabError(f"{label}: {value} is negative. Give seconds from the start of the video, or 0.")
    if start is not None and end is not None and end <= start:
        raise VidlabError(f"clip end {end}s is not after clip start {start}s. Fix one of them, or set both to 0 "
                          "(the whole video).")
    return Settings(media, generation, start, end, (system or "").strip() or None)


@dataclass
class MediaControls:
    upload: gr.File
    pick: gr.Dropdown | None
    player: gr.Video


def media_controls(options: WebOptions, prefix: str) -> MediaControls:
    """Upload, or pick from the media root, and a player for the chosen video."""
    mb = f"{options.max_upload_mb:g}"
    upload = gr.File(file_count="multiple", label=f"upload a video or images (≤ {mb} MiB)",
                     elem_id=f"{prefix}-upload", height=120)
    pick = None
    if options.media_root is not None:
        pick = gr.Dropdown(list_media(options.media_root), value=None, label=f"or pick from {options.media_root}",
                           filterable=True, elem_id=f"{prefix}-pick")
    player = gr.Video(label="video", interactive=False, elem_id=f"{prefix}-player", height=220)
    return MediaControls(upload, pick, player)


def chosen_media(options: WebOptions, uploaded, picked: str | None, settings: Settings) -> MediaChoice:
    """What the controls point at (the upload wins over the pick); empty when nothing is chosen."""
    paths: list[Path] = []
    if uploaded:
        files = uploaded if isinstance(uploaded, list) else [uploaded]
        paths = [Path(getattr(f, "name", f)) for f in files]
        for path in paths:
            check_size(path, int(options.max_upload_mb * 2**20))
    elif picked and options.media_root is not None:
        paths = [inside(options.media_root, picked)]
    if not paths:
        return MediaChoice()
    video, images = media_choice_parts(paths)
    if video is None and (settings.start is not None or settings.end is not None):
        raise VidlabError("clip start / end cut a video, and images are chosen. Set them to 0.")
    return MediaChoice(video, images, settings.start if video else None, settings.end if video else None)


def strip_value(preview: Preview | None) -> list[tuple]:
    """Gallery items: each frame with the stamp the prompt announces (`Time 1.0s`), or images numbered."""
    if preview is None:
        return []
    if preview.stamps:
        return [(frame, f"Time {stamp:.1f}s") for frame, stamp in zip(preview.frames, preview.stamps)]
    return [(frame, f"image {k + 1}") for k, frame in enumerate(preview.frames)]


def tokens_text(preview: Preview | None, answer: AnswerInfo | None = None) -> str:
    """The cost line under the strip: frames, visual tokens after and before DiffFP, prompt and answer."""
    if preview is None and answer is None:
        return "No video or images chosen: questions are answered from text alone."
    parts = []
    frames = len(answer.frames) if answer is not None and answer.frames else len(preview.stamps) if preview else 0
    if frames:
        parts.append(f"**{frames} frames**")
    elif preview is not None and preview.frames:
        parts.append(f"**{len(preview.frames)} image(s)**")
    after = answer.visual_tokens if answer and answer.visual_tokens is not None else \
        preview.visual_tokens if preview else None
    before = answer.visual_tokens_before_pruning if answer and answer.visual_tokens_before_pruning is not None else \
        preview.visual_tokens_before_pruning if preview else None
    if after is not None:
        parts.append(f"visual tokens: **{after}** after DiffFP, **{before}** before")
    else:
        parts.append("visual tokens: counted by the server with the first answer")
    if answer is not None:
        if answer.prompt_tokens is not None:
            parts.append(f"prompt {answer.prompt_tokens} tokens")
        if answer.generated_tokens is not None:
            parts.append(f"answer {answer.generated_tokens} tokens" +
                         (f" in {answer.seconds:.1f} s" if answer.seconds is not None else ""))
    elif preview is not None and preview.prompt_tokens is not None:
        parts.append(f"prompt about {preview.prompt_tokens} tokens with a short question")
    warnings = (answer.warnings if answer else []) or (preview.warnings if preview else [])
    text = " · ".join(parts)
    return text + "".join(f"\n\n⚠ {w}" for w in warnings)


def error_text(err: BaseException) -> str:
    """A message for the page: a user error as it is; anything else as one line, its traceback in the log."""
    if isinstance(err, VidlabError):
        return f"⚠ {err}"
    log.error("web page: unexpected error\n%s", "".join(traceback.format_exception(err)))
    return f"⚠ something went wrong on the page's side ({type(err).__name__}: {err}). The terminal that runs " \
           "`vidlab web` has the details."
