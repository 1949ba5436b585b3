"""Decode only the frames that were picked: seek when that is cheaper than decoding on, convert small.

For each picked frame (in presentation order) the decoder jumps to the keyframe before it when
that keyframe lies ahead of what it has decoded, else decodes on. Frames nothing picks and nothing
references (non-reference B-frames) are skipped until the next pick is near. A damaged packet costs
its own frame(s), not the rest of the video. Picked frames are converted to RGB at the size they will
be used at (scaled while converting, so a 4K video never sits in memory at 4K) and turned upright.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from vidlab.media.table import FrameTable, open_video, video_stream

log = logging.getLogger(__name__)

# Frames before a pick from which non-reference frames are decoded again (frame reordering and
# frame threading keep this many in flight).
_NEAR = 24


@dataclass
class Decoded:
    """The picked frames that could be decoded (by table index), and what it took."""

    frames: dict[int, np.ndarray] = field(default_factory=dict)
    damaged_packets: int = 0
    seeks: int = 0
    decoded: int = 0  # frames the decoder produced (skipped ones not counted)


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

    def __init__(self, container, stream, table: FrameTable, result: Decoded):
        self.container, self.stream, self.table, self.result = container, stream, table, result
        self.packets = container.demux(stream)
        self.index = -1  # table index of the last frame produced

    def seek(self, frame: int) -> None:
        self.container.seek(int(self.table.pts[frame]), stream=self.stream, backward=True, any_frame=False)
        self.packets = self.container.demux(self.stream)
        self.index = -1
        self.result.seeks += 1

    def frames(self):
        """Decoded frames with their table index, until the stream ends (or cannot be read further)."""
        while True:
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
            for frame in decoded:
                self.result.decoded += 1
                if frame.pts is None:
                    continue
                self.index = self.table.index_of(frame.pts)
                yield self.index, frame


def decode_frames(
    path: Path, table: FrameTable, wanted: list[int], size: tuple[int, int] | None = None
) -> Decoded:
    """The frames at `wanted` (table indices) as RGB uint8 arrays, upright, at most `size` (width, height)."""
    result = Decoded()
    order = sorted(set(wanted))
    if not order:
        return result
    # Keyframes only (Sampling.keyframes): the decoder drops every other frame unread, and slice
    # threads give each frame back at once (frame threads hold several in flight after each seek).
    keyframes_only = bool(table.keyframe[order].all())
    with open_video(path) as container:
        stream = video_stream(container, path)
        stream.thread_type = "SLICE" if keyframes_only else "AUTO"
        context = stream.codec_context
        reader = _Reader(container, stream, table, result)
        width, height = scaled_size(stream.width, stream.height, size, table.rotation)
        turns = (table.rotation // 90) % 4
        k = 0
        retried: set[int] = set()
        while k < len(order):
            target = order[k]
            start = table.keyframe_at_or_before(target)
            if start > reader.index or reader.index > target:
                reader.seek(start)
            far = reader.index < target - _NEAR and target not in retried
            context.skip_frame = "NONKEY" if keyframes_only else "NONREF" if far else "DEFAULT"
            passed = False
            for index, frame in reader.frames():
                if index >= target - _NEAR and not keyframes_only:
                    context.skip_frame = "DEFAULT"
                if index == target and frame.pts == table.pts[target]:
                    rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="BICUBIC")
                    result.frames[target] = np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
                    k += 1
                    if k == len(order) or order[k] > index + _NEAR or table.keyframe_at_or_before(order[k]) > index:
                        break
                    target = order[k]
                elif index > target:
                    passed = True
                    break
            else:
                passed = True  # the stream ended before the target: lost
            if passed:
                if target not in retried and reader.index > target:
                    retried.add(target)  # a skipped non-reference frame, or a seek that overshot: once more
                    reader.index = target + 1  # forces a seek back
                    continue
                k += 1
    return result
