"""Decode only the frames that were picked: seek when that saves real work, convert small.

For each picked frame (in presentation order) the decoder jumps to the keyframe before it when
that keyframe lies ahead of what it has decoded, else decodes on. Frames nothing picks and nothing
references (non-reference B-frames) are skipped until the next pick is near. One stream decodes
on one thread (slice threads only): frame threads cost a third more CPU and empty at every seek.
A long video is instead split into runs of whole keyframe groups (GOPs), one per core, each
decoded on its own container (this thread and worker processes: gop_workers.py) into its own rows
of the one output array: the groups decode independently, so the frames and pixels are those of
one stream. A damaged packet costs its own
frame(s), not the rest of the video. Picked frames are converted to RGB at the size they will be
used at (scaled while converting, so a 4K video never sits in memory at 4K) and turned upright.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from vidlab.media.gop_workers import decode_spans, usable_cores
from vidlab.media.table import FrameTable, open_video, video_stream

log = logging.getLogger(__name__)

# Frames before a pick from which non-reference frames are decoded again (more than frame
# reordering ever keeps in flight).
_NEAR = 24
_UNSEEKABLE_FORMATS = {"mpeg", "mpegts", "mpegvideo"}
# Times a missed frame is looked for again, each from one keyframe further back.
_RETRIES = 4
# Keyframe groups to decode per worker below which a video is not split (a worker's container and seek cost
# about what decoding a group or two does), and a seek's cost counted in decoded frames when balancing workers.
_GOPS_PER_WORKER = 2
_SEEK_FRAMES = 2


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
    workers: int = 1  # streams that decoded them at once (disjoint runs of keyframe groups)
    parallel: str = ""  # how those streams ran: "processes" or "threads" ("" for one stream)

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


def gop_spans(table: FrameTable, order: list[int], workers: int) -> list[tuple[int, int]]:
    """[start, stop) slices of `order` (sorted table indices), one per worker, each a run of whole keyframe
    groups (GOPs: the picks that decode from the same keyframe), of about equal decoding work; one slice (one
    stream) when there are too few groups for splitting to pay."""
    keyframes = table.keyframes_at_or_before(order)
    firsts = np.concatenate([[0], np.flatnonzero(np.diff(keyframes)) + 1])  # each group's first pick
    spans = min(workers, len(firsts) // _GOPS_PER_WORKER)
    if spans < 2:
        return [(0, len(order))]
    # A group's work: the frames from its keyframe to its last pick, plus a seek.
    lasts = np.append(firsts[1:], len(order)) - 1
    done = np.concatenate([[0], np.cumsum(np.asarray(order)[lasts] - keyframes[firsts] + 1 + _SEEK_FRAMES)])
    # Each cut between the two groups where the work done so far comes nearest a whole number of shares.
    shares = done[-1] * np.arange(1, spans) / spans
    cuts = np.abs(done[None, 1:-1] - shares[:, None]).argmin(axis=1) + 1  # groups before each cut
    bounds = [0, *(int(firsts[c]) for c in sorted(set(cuts.tolist()))), len(order)]
    return list(zip(bounds[:-1], bounds[1:]))


def decode_frames(
    path: Path, table: FrameTable, wanted: list[int], size: tuple[int, int] | None = None,
    workers: int | None = None, backend: str = "auto",
) -> Decoded:
    """The frames at `wanted` (table indices) as RGB uint8 arrays, upright, at most `size` (width, height).

    Args:
        workers: streams that decode disjoint runs of keyframe groups at once, each on its own container: this
            thread and worker processes (gop_workers.py; None: one per usable core; 1: one stream). Too few groups
            to split, or an MPEG stream (which cannot seek exactly), decode on one stream whatever it says.
        backend: "auto": worker processes where this process may start them, else threads; "threads": threads.
    """
    order = sorted(set(wanted))
    if not order:
        return Decoded(np.empty((0, 0, 0, 3), np.uint8))
    # Keyframes only (Sampling.keyframes): the decoder drops every other frame unread.
    keyframes_only = bool(table.keyframe[order].all())
    container = open_video(path)
    try:
        stream = video_stream(container, path)
        width, height = scaled_size(stream.width, stream.height, size, table.rotation)
        upright = (width, height) if table.rotation % 180 else (height, width)
        # np.empty touches no memory: rows of frames that cannot be decoded cost nothing. Every worker writes its
        # own rows of one array (this one, or its copy in shared memory), so splitting costs no memory beyond
        # each worker's decoder.
        result = Decoded(np.empty((len(order), *upright, 3), np.uint8))
        # MPEG program and transport streams seek by byte position: the frames after such a seek can
        # carry the wrong timestamps, so these are decoded straight through (they are rarely long).
        seekable = container.format.name not in _UNSEEKABLE_FORMATS
        spans = gop_spans(table, order, workers or usable_cores()) if seekable else [(0, len(order))]
        job = _Span(path, table, order, (width, height), keyframes_only, seekable, result.buffer)
        if len(spans) == 1:
            parts = [job.decode(container, stream, 0, len(order))]
        else:
            parts, result.buffer, result.parallel = decode_spans(job, spans, container, stream, backend)
    finally:
        container.close()
    for part in parts:
        result.rows.update(part.rows)
        result.damaged_packets += part.damaged_packets
        result.seeks += part.seeks
        result.decoded += part.decoded
    result.workers = len(spans)
    return result


@dataclass
class _Span:
    """What every worker shares: the picks (sorted table indices), how to convert them, and the output rows."""

    path: Path
    table: FrameTable
    order: list[int]
    size: tuple[int, int]  # (width, height) of the stored frame to convert to
    keyframes_only: bool
    seekable: bool
    buffer: np.ndarray

    def open_and_decode(self, first: int, stop: int) -> Decoded:
        with open_video(self.path) as container:
            return self.decode(container, video_stream(container, self.path), first, stop)

    def decode(self, container, stream, first: int, stop: int) -> Decoded:
        """Picks order[first:stop] into their rows of the buffer, on one stream of `container`."""
        table, order, (width, height) = self.table, self.order, self.size
        stream.thread_type = "SLICE"
        context = stream.codec_context
        turns = (table.rotation // 90) % 4
        result = Decoded(self.buffer)
        reader = _Reader(container, stream, result)
        retries: dict[int, int] = {}  # target -> times it was missed and looked for again
        k = first
        while k < stop:
            target = order[k]
            target_pts = int(table.pts[target])
            start = table.keyframe_at_or_before(target)
            for _ in range(retries.get(target, 0) - 1):  # a second miss: one keyframe further back each time
                start = table.keyframe_at_or_before(max(start - 1, 0))
            position = table.index_of(reader.last_pts) if reader.last_pts is not None else -1
            if position > target or (self.seekable and start > position):
                reader.seek(int(table.pts[start]) if self.seekable else None)
            near_pts = int(table.pts[max(target - _NEAR, 0)])
            far = (reader.last_pts is None or reader.last_pts < near_pts) and target not in retries
            context.skip_frame = "NONKEY" if self.keyframes_only else "NONREF" if far else "DEFAULT"
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
                    self.buffer[k] = np.rot90(rgb, turns) if turns else rgb
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
