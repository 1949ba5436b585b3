"""Still images, and videos stored as folders of frame images."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vidlab.errors import NoFramesError, UnreadableMediaError
from vidlab.media.clip import VideoClip, check_clip_window, require_exists
from vidlab.media.sampling import select_frames
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
    folder: str | Path, sampling: Sampling = Sampling(), start: float | None = None, end: float | None = None
) -> VideoClip:
    """A video stored as image files, one per frame, shown at `sampling.folder_fps` frames a second."""
    folder = require_exists(folder)
    files = list_frame_files(folder)
    if not files:
        raise NoFramesError(
            f"{folder}: the folder holds no frame images ({', '.join(sorted(IMAGE_SUFFIXES))}). "
            "Point at a folder of extracted frames or at a video file."
        )
    times = [i / sampling.folder_fps for i in range(len(files))]
    length = len(files) / sampling.folder_fps
    check_clip_window(folder, start, end, length)
    chosen = select_frames(times, length, sampling, start, end)
    frames = [load_image(files[i]) for i in chosen]
    size = frames[0].size
    arrays = [np.asarray(f if f.size == size else f.resize(size, Image.BICUBIC)) for f in frames]
    return VideoClip(
        path=str(folder),
        frames=np.stack(arrays),
        timestamps=[times[i] for i in chosen],
        frame_indices=chosen,
        source_fps=sampling.folder_fps,
        duration=length,
        start=start or 0.0,
        end=min(end, length) if end is not None else length,
    )
