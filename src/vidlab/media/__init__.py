"""Decoding and sampling of videos, frame folders and images. Imports nothing from model code."""

from __future__ import annotations

from pathlib import Path

from vidlab.media.clip import VideoClip
from vidlab.media.images import DEFAULT_FOLDER_FPS, load_frame_folder, load_image, load_images
from vidlab.media.sampling import Sampling, select_frames
from vidlab.media.video import load_video_file


def load_video(
    path: str | Path, sampling: Sampling = Sampling(), folder_fps: float = DEFAULT_FOLDER_FPS
) -> VideoClip:
    """Sample frames from a video file, or from a folder of frame images.

    Args:
        path: a video file (anything FFmpeg reads) or a folder of frame images.
        sampling: which frames to take (fps, max_frames, min_frames, num_frames, start, end).
        folder_fps: frame rate of a frame folder (ignored for files).
    """
    if Path(path).is_dir():
        return load_frame_folder(path, sampling, folder_fps)
    return load_video_file(path, sampling)


__all__ = [
    "Sampling",
    "VideoClip",
    "load_video",
    "load_video_file",
    "load_frame_folder",
    "load_image",
    "load_images",
    "select_frames",
]
