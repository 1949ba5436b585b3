"""The page's shared controls: media choice (upload or media root) and the frame / answer settings,
turned into `MediaChoice`, `MediaSettings` and `GenerationOptions`. Defaults come from vidlab.settings."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import gradio as gr

from vidlab.errors import MediaError, VidlabError
from vidlab.settings import GenerationOptions, MediaSettings, build
from vidlab.web.backend import AnswerInfo, MediaChoice, Preview
from vidlab.web.media import VIDEO_SUFFIXES, check_size, inside, list_media, media_choice_parts
from vidlab.web.options import WebOptions

log = logging.getLogger("vidlab.web")
FRAME_MODES = ["at most", "exactly"]
FRAME_RULES = list(get_args(MediaSettings.model_fields["frame_rule"].annotation))
_LABELS = {"frame_rule": "frame rule", "fps": "fps", "max_frames": "N (frames)", "num_frames": "N (frames)",
           "max_new_tokens": "max tokens", "temperature": "temperature", "start": "clip start", "end": "clip end"}


def _help(model, name: str) -> str:
    return model.model_fields[name].description


@dataclass
class SettingsControls:
    fps: gr.Number
    frame_mode: gr.Radio
    frames: gr.Number
    frame_rule: gr.Dropdown
    start: gr.Number
    end: gr.Number
    compression: gr.Checkbox
    temperature: gr.Number
    max_tokens: gr.Number
    system: gr.Textbox

    @property
    def inputs(self) -> list:
        return [self.fps, self.frame_mode, self.frames, self.frame_rule, self.start, self.end, self.compression,
                self.temperature, self.max_tokens, self.system]

    @property
    def frame_triggers(self) -> list:
        """The events after which the frame strip is redrawn: a number box left (blur) or entered, a choice made."""
        numbers = [self.fps, self.frames, self.start, self.end]
        return [*(box.blur for box in numbers), *(box.submit for box in numbers), self.frame_mode.change,
                self.frame_rule.change, self.compression.change]


def settings_controls(media: MediaSettings = MediaSettings(),
                      generation: GenerationOptions = GenerationOptions()) -> SettingsControls:
    """The settings panel (inside the caller's layout), starting from `media` and `generation`."""
    gr.Markdown("Frames and answers, for Chat and Compare. A change of the frames, the clip, DiffFP or the system "
                "prompt starts a new conversation; temperature and max tokens apply from the next answer on.",
                elem_id="set-note")
    # No minimum / maximum on the number boxes: gradio would refuse an out-of-range value before vidlab sees it,
    # turning every output red; vidlab's own check names the field and leaves the page as it was.
    fps = gr.Number(media.fps, label="fps", info=_help(MediaSettings, "fps"), elem_id="set-fps")
    with gr.Row():
        mode = gr.Radio(FRAME_MODES, value=FRAME_MODES[1 if media.num_frames else 0], label="frames",
                        elem_id="set-frame-mode", info="at most N spread over the video at fps, or exactly N evenly "
                        "spaced")
        frames = gr.Number(media.num_frames or media.max_frames, label="N", precision=0,
                           elem_id="set-frames")
    # the page starts from the rule `vidlab web` was given (a TinyLLaVA-Video / LLaMA-VID folder: its family's)
    frame_rule = gr.Dropdown(FRAME_RULES, value=media.frame_rule, label="frame rule",
                             info=_help(MediaSettings, "frame_rule"), elem_id="set-frame-rule")
    with gr.Row():
        start = gr.Number(0, label="clip start (s)", info="0: from the beginning", elem_id="set-start")
        end = gr.Number(0, label="clip end (s)", info="0: to the end", elem_id="set-end")
    compression = gr.Checkbox(media.compression, label="DiffFP",
                              info=_help(MediaSettings, "compression"), elem_id="set-difffp")
    temperature = gr.Number(generation.temperature, step=0.1, label="temperature",
                            info=_help(GenerationOptions, "temperature"), elem_id="set-temperature")
    max_tokens = gr.Number(generation.max_new_tokens, label="max tokens", precision=0,
                           info=_help(GenerationOptions, "max_new_tokens"), elem_id="set-max-tokens")
    system = gr.Textbox("", label="system prompt", lines=2, placeholder="none", elem_id="set-system")
    return SettingsControls(fps, mode, frames, frame_rule, start, end, compression, temperature, max_tokens, system)


@dataclass(frozen=True)
class Settings:
    media: MediaSettings
    generation: GenerationOptions
    start: float | None
    end: float | None
    system: str | None


def read_settings(fps, frame_mode, frames, frame_rule, start, end, compression, temperature, max_tokens, system, *,
                  base: MediaSettings = MediaSettings()) -> Settings:
    """The panel's values as settings objects (what the panel does not show comes from `base`); a bad value is
    one VidlabError naming its control."""
    def name(field: str) -> str:
        return _LABELS.get(field, field)

    frames = None if frames is None else int(frames)
    start, end = start or None, end or None  # an empty number box reads 0: the whole video
    values = {**base.model_dump(), "fps": fps, "frame_rule": frame_rule, "compression": bool(compression),
              "num_frames": None}
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

    @property
    def inputs(self) -> list:
        return [self.upload, *([self.pick] if self.pick else [])]


def media_controls(options: WebOptions, prefix: str) -> MediaControls:
    """Upload, or pick from the media root, and a player for the chosen video."""
    mb = f"{options.max_upload_mb:g}"
    upload = gr.File(file_count="multiple", label=f"upload a video or images (≤ {mb} MiB); a new upload replaces "
                     "the last", elem_id=f"{prefix}-upload", height=120)
    pick = None
    if options.media_root is not None:
        pick = gr.Dropdown(list_media(options.media_root), value=None, label=f"or pick from {options.media_root}",
                           filterable=True, elem_id=f"{prefix}-pick")
    player = gr.Video(label="video", interactive=False, elem_id=f"{prefix}-player", height=220)
    return MediaControls(upload, pick, player)


def example_media(options: WebOptions, count: int = 4) -> list[str]:
    """A few videos of the media root to offer as examples (the test split's first, if it has one)."""
    videos = [v for v in list_media(options.media_root) if Path(v).suffix.lower() in VIDEO_SUFFIXES]
    videos.sort(key=lambda v: (not Path(v).parts[0].startswith("test"), v))
    return videos[:count]


@dataclass
class MediaPick:
    """The media controls' values after one user action: the later of upload and pick wins, the other is cleared."""

    uploaded: list[str]
    picked: str | None
    upload_update: object  # gr.skip() or the upload box's new value
    pick_update: object


def settle_media(source: str, uploaded, picked: str | None, previous: list[str]) -> MediaPick:
    """What the upload box and the pick list hold after `source` ("upload", "pick" or "settings") changed.

    gradio's multi-file box adds each upload to the files already there; a new upload replaces them instead
    (several images chosen at once stay together). An upload clears the pick and a pick clears the upload,
    so the page never holds two choices of which one silently wins."""
    files = [str(getattr(f, "name", f)) for f in (uploaded if isinstance(uploaded, list) else
                                                   [uploaded] if uploaded else [])]
    upload_update, pick_update = gr.skip(), gr.skip()
    if source == "upload" and files:
        new = [f for f in files if f not in previous] or files
        if new != files:
            upload_update = new
        files = new
        if picked:
            picked, pick_update = None, None
    elif source == "pick" and picked and files:
        files, upload_update = [], None
    return MediaPick(files, picked, upload_update, pick_update)


def chosen_media(options: WebOptions, uploaded, picked: str | None, settings: Settings) -> MediaChoice:
    """What the controls point at (the upload if any, else the pick); empty when nothing is chosen."""
    paths: list[Path] = []
    if uploaded:
        files = uploaded if isinstance(uploaded, list) else [uploaded]
        paths = [Path(getattr(f, "name", f)) for f in files]
        for path in paths:
            check_upload(path, int(options.max_upload_mb * 2**20))
    elif picked and options.media_root is not None:
        paths = [inside(options.media_root, picked)]
    if not paths:
        return MediaChoice()
    video, images = media_choice_parts(paths)
    if video is None and (settings.start is not None or settings.end is not None):
        raise VidlabError("clip start / end cut a video, and images are chosen. Set them to 0.")
    return MediaChoice(video, images, settings.start if video else None, settings.end if video else None)


def check_upload(path: Path, max_bytes: int) -> None:
    """Refuse an empty file (a failed upload) and one over the page's limit, by the file's own name."""
    if path.is_file() and path.stat().st_size == 0:
        raise MediaError(f"{path.name}: the file is empty (0 bytes). Upload it again, or check that it was saved "
                         "completely.")
    check_size(path, max_bytes)


def media_message(choice: MediaChoice) -> dict | None:
    """The conversation's first message: the video or images the questions are about, shown in the chat."""
    files = [choice.video] if choice.video is not None else list(choice.images)
    if not files:
        return None
    return {"role": "user", "content": [{"path": str(f)} for f in files]}


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
            parts.append(f"answer {_count(answer.generated_tokens, 'token')}" +
                         (f" in {_duration(answer.seconds)}" if answer.seconds is not None else ""))
    elif preview is not None and preview.prompt_tokens is not None:
        parts.append(f"prompt about {preview.prompt_tokens} tokens with a short question")
    warnings = (answer.warnings if answer else []) or (preview.warnings if preview else [])
    text = " · ".join(parts)
    return text + "".join(f"\n\n⚠ {w}" for w in warnings)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _duration(seconds: float) -> str:
    """0.04 -> "40 ms", 3.21 -> "3.2 s" (a short answer's time must not read 0.0 s)."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def uploaded_paths(values: list) -> list[Path]:
    """The files in an upload box's value (for naming them in messages)."""
    uploaded = values[0] if values else None
    files = uploaded if isinstance(uploaded, list) else [uploaded] if uploaded else []
    return [Path(str(getattr(f, "name", f))) for f in files]


def error_text(err: BaseException, uploads: list[Path] = ()) -> str:
    """A message for the page: a user error as it is; anything else as one line, its traceback in the log.

    `uploads`: uploaded files, named in the message by their own names rather than the temporary paths gradio
    keeps them at."""
    if isinstance(err, VidlabError):
        text = str(err)
        for path in sorted(uploads, key=lambda p: -len(str(p))):
            text = text.replace(str(path), path.name).replace(str(path.resolve()), path.name)
        return f"⚠ {text}"
    log.error("web page: unexpected error\n%s", "".join(traceback.format_exception(err)))
    return f"⚠ something went wrong on the page's side ({type(err).__name__}: {err}). The terminal that runs " \
           "`vidlab web` has the details."
