"""Still images, and videos stored as folders of frame images."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vidlab.errors import NoFramesError, UnreadableMediaError
from vidlab.media.clip import VideoClip, check_clip_window, require_exists
from vidlab.media.sampling import Timeline, pick_frames
from vidlab.settings import Sampling

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def load_image(path: str | Path) -> Image.Image:
    """An RGB image, turned upright according to its EXIF orientation."""
    path = require_exists(path)
    if path.is_dir():
        raise UnreadableMediaError(f"{path}: is a folder, not an image. Pass an image file.")
    try:
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise UnreadableMediaError(f"{path}: not a readable image ({err}). Use a jpg, png, webp or bmp file.") from err


def load_images(paths: Sequence[str | Path]) -> list[Image.Image]:
    return [load_image(p) for p in paths]


def _natural_key(name: str) -> list:
    """Sort frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: _natural_key(p.name))


def load_frame_folder(
    folder: str | Path,
    sampling: Sampling = Sampling(),
    start: float | None = None,
    end: float | None = None,
    frame_size: Callable[[int, int, int], tuple[int, int]] | None = None,
) -> VideoClip:
    """A video stored as image files, one per frame, shown at `sampling.folder_fps` frames a second.

    `frame_size` as for video files: (height, width, frames) -> the size the frames are used at.
    """
    folder = require_exists(folder)
    files = list_frame_files(folder)
    if not files:
        raise NoFramesError(
            f"{folder}: the folder holds no frame images ({', '.join(sorted(IMAGE_SUFFIXES))}). "
            "Point at a folder of extracted frames or at a video file."
        )
    rate = sampling.folder_fps
    times = [i / rate for i in range(len(files))]
    length = len(files) / rate
    check_clip_window(folder, start, end, length)
    index_rate = rate if sampling.frame_rule == "videollama3" else None  # the original reads folders by index
    picks = pick_frames(Timeline(times, length, rate=rate, index_rate=index_rate), sampling, start, end)
    loaded = {i: load_image(files[i]) for i in sorted(set(picks.frames))}
    first = loaded[picks.frames[0]]
    width, height = first.size
    if frame_size is not None:
        target_h, target_w = frame_size(height, width, len(picks))
        if target_w * target_h < width * height:
            width, height = target_w, target_h
    arrays = {i: np.asarray(image if image.size == (width, height) else image.resize((width, height), Image.BICUBIC))
              for i, image in loaded.items()}
    return VideoClip(
        path=str(folder),
        frames=np.stack([arrays[i] for i in picks.frames]),
        timestamps=[times[i] for i in picks.frames],
        stamps=list(picks.stamps),
        frame_indices=list(picks.frames),
        source_fps=rate,
        duration=length,
        start=start or 0.0,
        end=min(end, length) if end is not None else length,
    )
