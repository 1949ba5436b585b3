"""The decoded result every loader returns, and the checks they share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidlab.errors import ClipWindowError, MediaNotFoundError


@dataclass
class VideoClip:
    """Frames sampled from a video, with the times they were shown.

    Attributes:
        path: where the frames came from.
        frames: (frames, height, width, 3) uint8 RGB.
        timestamps: presentation time of each frame in seconds, counted from the video's first
            frame (true times: variable frame rate and a stream start offset are accounted for).
        frame_indices: position of each frame in the video's sequence of frames.
        source_fps: the video's average frame rate.
        duration: length of the whole video in seconds.
        start: start of the clip window used, seconds (0 for the whole video).
        end: end of the clip window used, seconds (the duration for the whole video).
    """

    path: str
    frames: np.ndarray
    timestamps: list[float]
    frame_indices: list[int]
    source_fps: float
    duration: float
    start: float = 0.0
    end: float | None = None

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def clip_timestamps(self) -> list[float]:
        """Times from the start of the clip: what the prompt announces (`Time 1.0s:`)."""
        return [max(t - self.start, 0.0) for t in self.timestamps]


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
    if start is not None and end is not None and end <= start:
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
