"""Video files through PyAV (bundled FFmpeg): mp4, mkv, webm, avi, mov, gif and the rest.

Two passes over the file. The first only demuxes: packet timestamps give every frame's true
presentation time without decoding a pixel. The second decodes up to the last chosen frame and
converts only the chosen frames to RGB, so a long video is never held in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from vidlab.errors import NoFramesError, NoVideoStreamError, UnreadableMediaError
from vidlab.media.clip import VideoClip, check_clip_window, require_exists
from vidlab.media.sampling import select_frames
from vidlab.settings import Sampling

log = logging.getLogger(__name__)


@dataclass
class FrameTable:
    """Every frame of a stream: its identifying key and its time from the first frame."""

    keys: list[int]  # pts where the container has them, else decode order
    times: list[float]
    end: float  # when the last frame stops showing
    keyed_by_pts: bool

    @property
    def average_fps(self) -> float:
        if len(self.times) < 2:
            return 1.0 / self.end if self.end > 0 else 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise UnreadableMediaError(
            f"{path}: not a readable video ({err}). Check that the file is complete and is a video "
            "(mp4, mkv, webm, avi, mov, gif)."
        ) from err


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = ", ".join(s.type for s in container.streams) or "none"
        raise NoVideoStreamError(f"{path}: has no video stream (streams found: {kinds}). Use a file with video.")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _table_from_packets(path: Path) -> FrameTable | None:
    """Frame times from packet timestamps; None when the container does not stamp every packet."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        pts, last_duration = [], 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue  # flush or discarded packets carry no frame
                if packet.pts is None:
                    return None
                pts.append(packet.pts)
                last_duration = packet.duration or last_duration
        except av.error.FFmpegError as err:
            log.warning("%s: demuxing stopped early (%s); using the frames before it", path, err)
        if not pts:
            return None
        pts.sort()
        base, unit = pts[0], float(stream.time_base)
        times = [(p - base) * unit for p in pts]
        return FrameTable(pts, times, times[-1] + _frame_length(times, last_duration * unit, stream), True)


def _table_from_decoding(path: Path) -> FrameTable:
    """Frame times by decoding everything once (no RGB conversion): the fallback for odd containers."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        times = []
        try:
            for frame in container.decode(stream):
                times.append(frame.time if frame.time is not None else len(times) / _rate(stream))
        except av.error.FFmpegError as err:
            log.warning("%s: decoding stopped early (%s); using the frames before it", path, err)
        if not times:
            raise NoFramesError(f"{path}: no frame could be decoded. The video is empty or corrupt; re-encode it.")
        base = times[0]
        times = [t - base for t in times]
        return FrameTable(list(range(len(times))), times, times[-1] + _frame_length(times, 0.0, stream), False)


def _rate(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 25.0


def _frame_length(times: list[float], last_duration: float, stream: av.video.stream.VideoStream) -> float:
    """How long the last frame shows: its own duration, else the typical gap, else 1/rate."""
    if last_duration > 0:
        return last_duration
    if len(times) > 1:
        return float(np.median(np.diff(times)))
    return 1.0 / _rate(stream)


def _decode_chosen(path: Path, table: FrameTable, chosen: list[int]) -> tuple[list[np.ndarray], list[int]]:
    """Decode up to the last chosen frame; convert only the chosen ones to RGB."""
    wanted = {table.keys[i]: i for i in chosen}
    last_key = max(wanted)
    frames: dict[int, np.ndarray] = {}
    size = None
    with _open(path) as container:
        stream = _video_stream(container, path)
        try:
            for order, frame in enumerate(container.decode(stream)):
                key = frame.pts if table.keyed_by_pts and frame.pts is not None else order
                if key in wanted:
                    size = size or (frame.width, frame.height)
                    frames[wanted[key]] = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
                if key >= last_key:
                    break
        except av.error.FFmpegError as err:
            log.warning("%s: decoding stopped early (%s); using the frames before it", path, err)
    got = sorted(frames)
    if not got:
        raise NoFramesError(f"{path}: no frame could be decoded. The video is empty or corrupt; re-encode it.")
    if len(got) < len(chosen):
        log.warning("%s: %d of %d sampled frames could not be decoded", path, len(chosen) - len(got), len(chosen))
    return [frames[i] for i in got], got


def load_video_file(
    path: str | Path, sampling: Sampling = Sampling(), start: float | None = None, end: float | None = None
) -> VideoClip:
    """Decode the frames `sampling` asks for from a video file.

    Raises:
        MediaNotFoundError, UnreadableMediaError, NoVideoStreamError, NoFramesError,
        ClipWindowError: each naming the path and the reason.
    """
    path = require_exists(path)
    table = _table_from_packets(path) or _table_from_decoding(path)
    check_clip_window(path, start, end, table.end)
    chosen = select_frames(table.times, table.end, sampling, start, end)
    frames, indices = _decode_chosen(path, table, chosen)
    return VideoClip(
        path=str(path),
        frames=np.stack(frames),
        timestamps=[table.times[i] for i in indices],
        frame_indices=indices,
        source_fps=table.average_fps,
        duration=table.end,
        start=start or 0.0,
        end=min(end, table.end) if end is not None else table.end,
    )
