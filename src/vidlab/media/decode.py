"""Decode only the frames that were picked: seek when that saves real work, convert small.

For each picked frame (in presentation order) the decoder jumps to the keyframe before it when
that keyframe lies ahead of what it has decoded, else decodes on. Frames nothing picks and nothing
references (non-reference B-frames) are skipped until the next pick is near. One video decodes
on one thread (slice threads only): frame threads cost a third more CPU and empty at every seek,
and evaluation and training decode several videos at once instead. A
damaged packet costs its own frame(s), not the rest of the video. Picked frames are converted to
RGB at the size they will be used at (scaled while converting, so a 4K video never sits in memory
at 4K) and turned upright.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from vidlab.media.table import FrameTable, open_video, video_stream

log = logging.getLogger(__name__)

# Frames before a pick from which non-reference frames are decoded again (more than frame
# reordering ever keeps in flight).
_NEAR = 24
_UNSEEKABLE_FORMATS = {"mpeg", "mpegts", "mpegvideo"}
# Times a missed frame is looked for again, each from one keyframe further back.
_RETRIES = 4


@dataclass
class Decoded:
    """The picked frames that could be decoded, and what it took.

    Frames are written straight into one array, a row per picked frame in order (a row stays
    unwritten when its frame could not be decoded): the clip needs no second copy of them.
    """

    buffer: np.ndarray
    rows: dict[int, int] = field(default_factory=dict)  # table index -> its row in buffer, once decoded
    damaged_packets: int = 0
    seeks: int = 0
    decoded: int = 0  # frames the decoder produced (skipped ones not counted; torchcodec: the frames it returned)
    decoder: str = "pyav"  # the library that decoded them

    @property
    def frames(self) -> dict[int, np.ndarray]:
        """The decoded frames by table index (views into buffer)."""
        return {index: self.buffer[row] for index, row in self.rows.items()}


def scaled_size(width: int, height: int, size: tuple[int, int] | None, rotation: int) -> tuple[int, int]:
    """The stored frame's (width, height) to convert to: `size` (upright width, height) turned like the
    stored frame; never larger than the frame itself (None: the frame's own size)."""
    if size is None:
        return width, height
    target_w, target_h = size if rotation % 180 == 0 else size[::-1]
    if target_w * target_h >= width * height:
        return width, height
    return max(target_w, 2), max(target_h, 2)


class _Reader:
    """Frames of one stream in presentation order, resuming after seeks and damaged packets."""

    def __init__(self, container, stream, result: Decoded):
        self.container, self.stream, self.result = container, stream, result
        self.packets = container.demux(stream)
        self.pending: deque = deque()  # decoded, not yet handed out (one packet can give several frames)
        self.last_pts: int | None = None  # of the last frame handed out; None: nothing since the last seek

    def seek(self, pts: int | None) -> None:
        """To the keyframe at or before `pts`; None: to the start of the file."""
        if pts is None:
            self.container.seek(0, backward=True, any_frame=False)
        else:
            self.container.seek(pts, stream=self.stream, backward=True, any_frame=False)
        self.packets = self.container.demux(self.stream)
        self.pending.clear()
        self.last_pts = None
        self.result.seeks += 1

    def frames(self):
        """Decoded frames, until the stream ends (or cannot be read further). A caller may stop
        early and call again: it goes on from where it stopped."""
        while True:
            while self.pending:
                frame = self.pending.popleft()
                self.last_pts = frame.pts
                yield frame
            try:
                packet = next(self.packets)
            except StopIteration:
                return
            except av.error.FFmpegError as err:
                log.warning("%s: reading stopped early (%s)", self.container.name, err)
                return
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as err:  # a damaged packet costs its own frame, not the rest
                self.result.damaged_packets += 1
                log.debug("damaged packet at %s: %s", packet.pts, err)
                continue
            self.result.decoded += len(decoded)
            self.pending.extend(frame for frame in decoded if frame.pts is not None)


def decode_frames(
    path: Path, table: FrameTable, wanted: list[int], size: tuple[int, int] | None = None
) -> Decoded:
    """The frames at `wanted` (table indices) as RGB uint8 arrays, upright, at most `size` (width, height)."""
    order = sorted(set(wanted))
    if not order:
        return Decoded(np.empty((0, 0, 0, 3), np.uint8))
    # Keyframes only (Sampling.keyframes): the decoder drops every other frame unread.
    keyframes_only = bool(table.keyframe[order].all())
    with open_video(path) as container:
        stream = video_stream(container, path)
        stream.thread_type = "SLICE"
        context = stream.codec_context
        width, height = scaled_size(stream.width, stream.height, size, table.rotation)
        turns = (table.rotation // 90) % 4
        upright = (width, height) if turns % 2 else (height, width)
        # np.empty touches no memory: rows of frames that cannot be decoded cost nothing.
        result = Decoded(np.empty((len(order), *upright, 3), np.uint8))
        reader = _Reader(container, stream, result)
        # MPEG program and transport streams seek by byte position: the frames after such a seek can
        # carry the wrong timestamps, so these are decoded straight through (they are rarely long).
        seekable = container.format.name not in _UNSEEKABLE_FORMATS
        retries: dict[int, int] = {}  # target -> times it was missed and looked for again
        k = 0
        while k < len(order):
            target = order[k]
            target_pts = int(table.pts[target])
            start = table.keyframe_at_or_before(target)
            for _ in range(retries.get(target, 0) - 1):  # a second miss: one keyframe further back each time
                start = table.keyframe_at_or_before(max(start - 1, 0))
            position = table.index_of(reader.last_pts) if reader.last_pts is not None else -1
            if position > target or (seekable and start > position):
                reader.seek(int(table.pts[start]) if seekable else None)
            near_pts = int(table.pts[max(target - _NEAR, 0)])
            far = (reader.last_pts is None or reader.last_pts < near_pts) and target not in retries
            context.skip_frame = "NONKEY" if keyframes_only else "NONREF" if far else "DEFAULT"
            passed = True  # until the target shows up
            for frame in reader.frames():
                if frame.pts < target_pts:
                    if far and frame.pts >= near_pts:
                        context.skip_frame, far = "DEFAULT", False
                    continue
                if frame.pts == target_pts:
                    # One scaling thread: PyAV 18.1.1 keeps a threaded scaler between calls, and a process forked
                    # after it (data check, DataLoader workers) hangs on its first frame.
                    rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="BICUBIC",
                                           threads=1)
                    result.buffer[k] = np.rot90(rgb, turns) if turns else rgb
                    result.rows[target] = k
                    passed = False
                break
            tries = retries.get(target, 0)
            if passed and tries < _RETRIES and reader.last_pts is not None and reader.last_pts > target_pts:
                # A skipped non-reference frame, or a seek that overshot: again, from its keyframe, then from
                # earlier ones (an MPEG program stream seeks by byte position and can overshoot again).
                retries[target] = tries + 1
                reader.last_pts = int(table.pts[-1]) + 1  # forces a seek back
                continue
            k += 1
    return result
