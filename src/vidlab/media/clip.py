"""The decoded result every loader returns, and the checks they share."""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidlab.errors import ClipWindowError, MediaNotFoundError
from vidlab.media.subtitles import Cue


@dataclass
class VideoClip:
    """Frames sampled from a video, with the times they were shown and the times the prompt announces.

    Attributes:
        path: where the frames came from.
        frames: (frames, height, width, 3) uint8 RGB, upright, possibly already scaled down to the
            size they will be used at.
        timestamps: true presentation time of each frame in seconds, counted from the video's first
            frame (variable frame rate and a stream start offset accounted for).
        stamps: the time the prompt announces for each frame (`Time 1.0s:`), as the frame rule
            gives it (see vidlab.media.sampling).
        frame_indices: position of each frame in the video's sequence of frames.
        source_fps: the video's average frame rate.
        duration: length of the whole video in seconds (up to the end of its last readable frame).
        start: start of the clip window used, seconds (0 for the whole video).
        end: end of the clip window used, seconds (the duration for the whole video).
        warnings: what the user should know about this video (frames lost to damaged packets, a
            cut file used as it is).
        decoder: the library that decoded them ("pyav" or "torchcodec"; Sampling.decoder chooses).
        numpy_stamps: the original's stamps for these frames are numpy floats (its FFmpeg path), which
            its chat template rounds numpy-style (`announced_stamps`).
        key: what identifies these frames (set by `ClipCache`: the file and the settings that made
            them); None when unknown. Vision features computed from them are cached under it.
        subtitles: the video's subtitle cues (`vidlab.media.subtitles`), when a subtitle file came with it;
            times on the video's clock.
    """

    path: str
    frames: np.ndarray
    timestamps: list[float]
    stamps: list[float]
    frame_indices: list[int]
    source_fps: float
    duration: float
    start: float = 0.0
    end: float | None = None
    warnings: list[str] = field(default_factory=list)
    decoder: str = "pyav"
    key: Hashable | None = None
    numpy_stamps: bool = False
    subtitles: list[Cue] | None = None

    def __len__(self) -> int:
        return len(self.timestamps)


def announced_stamps(clip: VideoClip) -> list[float]:
    """The stamps as the prompt announces them, for `f"Time {t:.1f}s:"`.

    VideoLLaMA3's template writes `round(1)` of each stamp: numpy's rounding for the numpy floats of
    its FFmpeg path (x10, halves to even: 2.15 -> 2.2, 0.85 -> 0.8), Python's (the nearest of the
    exact binary value: 2.15 -> 2.1) for its frame-index path. One decimal rounded here prints the same.
    """
    if not clip.numpy_stamps:
        return list(clip.stamps)
    return np.round(np.asarray(clip.stamps, dtype=np.float64), 1).tolist()


def require_exists(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise MediaNotFoundError(
            f"{path}: no such file or folder. Check the path; annotation paths are relative to the data root."
        )
    return path


def check_clip_window(path: str | Path, start: float | None, end: float | None, end_of_video: float) -> None:
    """Raise if the requested start/end cannot select anything from a video this long."""
    problem = None
    if any(value is not None and not math.isfinite(value) for value in (start, end)):
        problem = f"start {start} / end {end} must be finite numbers of seconds"
    elif start is not None and end is not None and end <= start:
        problem = f"end {end}s is not after start {start}s"
    elif start is not None and start < 0:
        problem = f"start {start}s is negative"
    elif end is not None and end <= 0:
        problem = f"end {end}s is not after the video's start"
    elif start is not None and start >= end_of_video:
        problem = f"start {start}s is at or after the end of the video"
    if problem:
        raise ClipWindowError(
            f"{path}: clip window outside the video: {problem} (the video runs 0-{end_of_video:.2f}s). "
            "Fix the start/end of the record or the --start/--end options."
        )
