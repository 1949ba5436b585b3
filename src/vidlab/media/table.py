"""Every frame of a video stream, without decoding one: times, keyframes, and how much of the file is there.

Frame choice (sampling.py) and seeking (decode.py) both work from this table. It is read from
the container's own sample index where that index is complete (mp4 / mov: read with the header,
in milliseconds even for an hour of video), else from one pass over the packets (mkv, webm, avi,
...; no pixel is decoded), else, for the odd container that stamps no packet, by decoding once.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vidlab.errors import NoFramesError, NoVideoStreamError, UnreadableMediaError

log = logging.getLogger(__name__)

# AVIndexEntry flags (libavformat).
_INDEX_KEYFRAME, _INDEX_DISCARD = 1, 2
# AVInputFormat flag: the format's timestamps may jump (libavformat's AVFMT_TS_DISCONT).
_TS_DISCONT = 0x0200
# A stream whose readable frames end this much before the length its header declares is a cut file.
TRUNCATED_SHORTFALL = (1.0, 0.1)  # seconds, and share of the declared length: both must be exceeded


@dataclass
class FrameTable:
    """Every frame of a stream, in presentation order.

    Attributes:
        pts: each frame's presentation timestamp in the stream's time base (what decoded frames carry).
        times: each frame's time in seconds from the stream's first frame.
        keyframe: whether decoding can start at each frame (sorted like `pts`).
        end: when the last readable frame stops showing (seconds from the first frame).
        time_base: seconds per pts unit.
        first_offset: seconds from the file's start (FFmpeg's time 0) to the first frame.
        stream_start: the stream's start time as FFmpeg reports it (ffprobe's start_time), seconds.
        file_duration: the file's length as FFmpeg reports it (ffprobe's format duration), seconds.
        declared_end: the stream's length as its header states it (seconds from the first frame;
            None when the header states none).
        rate: the stream's average frame rate.
        rotation: counter-clockwise degrees to turn each frame to show it upright (display matrix).
        width, height: the frames' size as stored (before turning them upright).
        source: where the table came from: "index", "packets" or "decoding".
        stream_index: the video stream's index among all the file's streams.
        reorders: frames are decoded in another order than they are shown (B-frames).
        pixel_format: how the frames are stored (FFmpeg's name, e.g. yuv420p; "" when unknown).
        nominal_rate: FFmpeg's guess of the stream's frame rate (r_frame_rate; the rate its command line
            writes at when no filter sets one); None: unknown.
        single_stream: the file holds no other stream (audio, subtitles) than this one.
        durations: each frame's packet duration in seconds (0 where the container gives none; None: unknown).
        ts_discont: the container's timestamps may jump (AVFMT_TS_DISCONT: MPEG program and transport streams).
    """

    pts: np.ndarray  # int64
    times: np.ndarray  # float64
    keyframe: np.ndarray  # bool
    end: float
    time_base: Fraction
    first_offset: float
    stream_start: float
    file_duration: float | None
    declared_end: float | None
    rate: float
    rotation: int
    width: int
    height: int
    source: str
    stream_index: int = 0
    reorders: bool = False
    pixel_format: str = ""
    nominal_rate: float | None = None
    single_stream: bool = False
    durations: np.ndarray | None = None  # float64
    ts_discont: bool = False

    def __len__(self) -> int:
        return len(self.pts)

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) of the frames shown upright."""
        return (self.width, self.height) if self.rotation % 180 == 0 else (self.height, self.width)

    @property
    def truncated(self) -> bool:
        """The readable frames end well before the length the header declares (a cut download)."""
        if self.declared_end is None:
            return False
        shortfall = self.declared_end - self.end
        seconds, share = TRUNCATED_SHORTFALL
        return shortfall > seconds and shortfall > share * self.declared_end

    @functools.cached_property
    def _keyframe_before(self) -> np.ndarray:
        return np.maximum.accumulate(np.where(self.keyframe, np.arange(len(self.pts)), 0))

    def keyframe_at_or_before(self, index: int) -> int:
        """The nearest frame at or before `index` (presentation order) that decoding can start from."""
        return int(self._keyframe_before[index])

    def keyframes_at_or_before(self, indices) -> np.ndarray:
        """`keyframe_at_or_before` of each of `indices`."""
        return self._keyframe_before[np.asarray(indices, dtype=np.int64)]

    def index_of(self, pts: int) -> int:
        """The table index of the last frame at or before `pts`."""
        return int(np.searchsorted(self.pts, pts, side="right")) - 1


def open_video(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise UnreadableMediaError(
            f"{path}: not a readable video ({err}). Check that the file is complete and is a video "
            "(mp4, mkv, webm, avi, mov, gif)."
        ) from err


def video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = ", ".join(s.type for s in container.streams) or "none"
        raise NoVideoStreamError(f"{path}: has no video stream (streams found: {kinds}). Use a file with video.")
    return container.streams.video[0]


def _rate(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 25.0


def _seconds(value, unit) -> float | None:
    return None if value is None else float(value * unit)


@dataclass(frozen=True)
class _Header:
    time_base: Fraction
    stream_start: float | None  # seconds
    file_start: float  # seconds: FFmpeg's time 0 (the earliest stream start)
    file_duration: float | None
    stream_duration: float | None
    only_stream: bool
    rate: float
    width: int
    height: int
    stream_index: int
    reorders: bool
    pixel_format: str
    nominal_rate: float | None
    ts_discont: bool


def _header(container: av.container.InputContainer, stream) -> _Header:
    time_base = Fraction(stream.time_base)
    file_start = container.start_time / av.time_base if container.start_time is not None else None
    stream_start = _seconds(stream.start_time, time_base)
    return _Header(
        time_base=time_base,
        stream_start=stream_start,
        file_start=file_start if file_start is not None else (stream_start or 0.0),
        file_duration=container.duration / av.time_base if container.duration is not None else None,
        stream_duration=_seconds(stream.duration, time_base),
        only_stream=len(container.streams) == 1,
        rate=_rate(stream),
        width=stream.width,
        height=stream.height,
        stream_index=stream.index,
        reorders=bool(stream.codec_context.has_b_frames),
        pixel_format=stream.codec_context.pix_fmt or "",
        nominal_rate=float(stream.guessed_rate) if stream.guessed_rate else None,
        ts_discont=bool(container.format.flags & _TS_DISCONT),
    )


def _declared_end(header: _Header, first: float) -> float | None:
    """The stream's length as declared, in seconds from its first frame (the container's length only
    when the video is its only stream: with audio it may be the audio's)."""
    if header.stream_duration is not None:
        start = header.stream_start if header.stream_start is not None else first
        return header.stream_duration + start - first
    if header.file_duration is not None and header.only_stream:
        # Matroska states its length from time 0, not from its first timestamp (a file starting at
        # 2.5 s "lasts" 6.5 s for 4 s of video): of the two readings the shorter one, so as never to
        # call a whole file cut
        return min(header.file_duration + header.file_start, header.file_duration) - first
    return None


def _frame_length(times: np.ndarray, last_duration: float, rate: float) -> float:
    """How long the last frame shows: its own duration, else the typical gap, else 1/rate."""
    if last_duration > 0:
        return last_duration
    if len(times) > 1:
        return float(np.median(np.diff(times)))
    return 1.0 / rate


def _table(
    pts, keyframe, last_duration: int, header: _Header, rotation: int, source: str, durations=None
) -> FrameTable:
    tb = header.time_base
    pts = np.asarray(pts, dtype=np.int64)
    keyframe = np.asarray(keyframe, dtype=bool)
    base = int(pts[0])
    times = (pts - base).astype(np.float64) * tb.numerator / tb.denominator
    first = float(base * tb)
    end = float(times[-1]) + _frame_length(times, float(last_duration * tb), header.rate)
    return FrameTable(
        pts=pts, times=times, keyframe=keyframe, end=end, time_base=tb,
        first_offset=first - header.file_start,
        stream_start=header.stream_start if header.stream_start is not None else first,
        file_duration=header.file_duration, declared_end=_declared_end(header, first), rate=header.rate,
        rotation=rotation, width=header.width, height=header.height, source=source,
        stream_index=header.stream_index, reorders=header.reorders, pixel_format=header.pixel_format,
        nominal_rate=header.nominal_rate, single_stream=header.only_stream, ts_discont=header.ts_discont,
        durations=None if durations is None else np.asarray(durations, dtype=np.float64) * float(tb),
    )


def _from_index(path: Path, stream, header: _Header, rotation: int) -> FrameTable | None:
    """The table from the container's sample index (mp4, mov), or None where that index cannot give it.

    The index lists every sample in decode order with its decode timestamp. Presentation times
    follow when decoding does not reorder frames (no B-frames: presentation = decode time plus a
    constant), or when frames are evenly spaced (then the times are the same set, shifted).
    """
    entries = stream.index_entries
    if len(entries) == 0 or stream.frames != len(entries) or stream.start_time is None:
        return None
    rows = np.array([(e.timestamp, e.flags, e.pos, e.size) for e in entries], dtype=np.int64)
    dts, flags, ends = rows[:, 0], rows[:, 1], rows[:, 2] + rows[:, 3]
    if (flags & _INDEX_DISCARD).any():
        return None  # an edit list hides some samples: the packets say which
    gaps = np.diff(dts)
    if (gaps <= 0).any():
        return None
    even = len(gaps) < 2 or bool((gaps == gaps[0]).all())
    if stream.codec_context.has_b_frames and not even:
        return None
    readable = ends <= os.path.getsize(path)
    if not readable[0]:
        return None
    count = len(dts) if readable.all() else int(np.argmin(readable))  # samples up to the first missing byte
    shift = int(stream.start_time) - int(dts[0])  # the first frame is shown at the stream's start time
    if count < len(dts):
        last_duration = int(gaps[count - 1])
    elif stream.duration:
        last_duration = int(stream.duration) - int(dts[-1] - dts[0])
    else:
        last_duration = int(gaps[-1]) if len(gaps) else 0
    keyframe = (flags[:count] & _INDEX_KEYFRAME).astype(bool)
    keyframe[0] = True
    sample_durations = np.append(gaps[: count - 1], max(last_duration, 0)) if count else None
    return _table(dts[:count] + shift, keyframe, max(last_duration, 0), header, rotation, "index", sample_durations)


def _from_packets(path: Path, header: _Header, rotation: int) -> FrameTable | None:
    """The table from one pass over the packets (no decoding); None when packets carry no timestamps."""
    with open_video(path) as container:
        stream = video_stream(container, path)
        frames: list[tuple[int, bool, int]] = []
        last_duration = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue  # flush or discarded packets carry no frame
                if packet.pts is None:
                    return None
                frames.append((packet.pts, packet.is_keyframe, packet.duration or 0))
                last_duration = packet.duration or last_duration
        except av.error.FFmpegError as err:
            log.warning("%s: reading packets stopped early (%s); using the frames before it", path, err)
        if not frames:
            return None
        frames.sort()
        pts = [p for p, _, _ in frames]
        keyframe = [k for _, k, _ in frames]
        keyframe[0] = True
        return _table(pts, keyframe, last_duration, header, rotation, "packets", [d for _, _, d in frames])


def _from_decoding(path: Path, header: _Header, rotation: int) -> FrameTable:
    """Frame times by decoding everything once (no RGB conversion): the fallback for odd containers."""
    with open_video(path) as container:
        stream = video_stream(container, path)
        stream.thread_type = "AUTO"
        pts: list[int] = []
        unit = 1 / (header.rate * header.time_base)
        try:
            for frame in container.decode(stream):
                pts.append(frame.pts if frame.pts is not None else round(len(pts) * unit))
        except av.error.FFmpegError as err:
            log.warning("%s: decoding stopped early (%s); using the frames before it", path, err)
    if not pts:
        raise NoFramesError(f"{path}: no frame could be decoded. The video is empty or corrupt; re-encode it.")
    return _table(pts, [True] + [False] * (len(pts) - 1), 0, header, rotation, "decoding")


def read_frame_table(path: Path) -> FrameTable:
    """The frame table of a video file (see the module docstring for where it comes from).

    Raises:
        UnreadableMediaError, NoVideoStreamError, NoFramesError: naming the path and the reason.
    """
    with open_video(path) as container:
        stream = video_stream(container, path)
        header = _header(container, stream)
        rotation = _rotation(container, stream)
        table = _from_index(path, stream, header, rotation)
    if table is None:
        table = _from_packets(path, header, rotation) or _from_decoding(path, header, rotation)
    return table


def _rotation(container: av.container.InputContainer, stream) -> int:
    """The display rotation (counter-clockwise degrees) of the stream's frames, read from its first frame
    (PyAV gives the display matrix on frames, not on streams)."""
    try:
        for frame in container.decode(stream):
            return int(frame.rotation or 0)
    except av.error.FFmpegError:
        pass
    return 0
