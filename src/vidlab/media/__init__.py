"""Decoding and sampling of videos, frame folders and images. Imports nothing from model code."""

from __future__ import annotations

from pathlib import Path

from vidlab.media.clip import VideoClip
from vidlab.media.images import load_frame_folder, load_image, load_images
from vidlab.media.sampling import pick_frames, select_frames
from vidlab.media.video import FrameSize, load_video_file
from vidlab.settings import Sampling


def load_video(
    path: str | Path,
    sampling: Sampling = Sampling(),
    start: float | None = None,
    end: float | None = None,
    frame_size: FrameSize | None = None,
) -> VideoClip:
    """Sample frames from a video file, or from a folder of frame images.

    Args:
        path: a video file (anything FFmpeg reads) or a folder of frame images (shown at
            `sampling.folder_fps`).
        sampling: which frames to take (fps, max_frames, min_frames, num_frames, frame rule, ...).
        start, end: use only this part of the video, in seconds (None: from the start / to the end).
        frame_size: (height, width, frames) -> the (height, width) the frames will be used at; they
            are scaled to it while decoding (None: full size). `vidlab.inputs` passes the
            processor's size, so memory stays bounded for any resolution.
    """
    if Path(path).is_dir():
        return load_frame_folder(path, sampling, start, end, frame_size)
    return load_video_file(path, sampling, start, end, frame_size)


__all__ = [
    "Sampling",
    "VideoClip",
    "load_video",
    "load_video_file",
    "load_frame_folder",
    "load_image",
    "load_images",
    "select_frames",
    "pick_frames",
]
