"""The optional second decoder: torchcodec (on the system's FFmpeg), where it is faster than PyAV.

Measured by benchmarks/decode.py: on streams without B-frames (every frame up to a pick must be
decoded anyway) torchcodec spends less CPU than PyAV on frames kept at their own size. PyAV stays
the default that needs nothing, and keeps the work where it is ahead or torchcodec cannot follow:
frames scaled while decoding (PyAV converts and scales in one step; torchcodec's resize runs
after a full-size conversion and costs more than it saves), B-frame streams (PyAV skips frames
nothing references), keyframe mode, and rotated videos (torchcodec's resize does not turn the size
with the picture).

torchcodec gets vidlab's frame table as its frame index, so it does not scan the file a second
time, and each frame it returns is checked against the table's timestamp for the frame asked for.
On anything else (a damaged packet, another frame, FFmpeg libraries it cannot load) it returns
None and the video is decoded by PyAV: the frames are the same frames either way.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from pathlib import Path

import numpy as np

from vidlab.media.decode import Decoded, scaled_size
from vidlab.media.table import FrameTable

log = logging.getLogger(__name__)

# 8-bit formats whose RGB conversion gives the same pixels through PyAV's FFmpeg and the system's (checked on
# H.264, MPEG-4 and VP9 files): only these go to torchcodec under `auto`, so that installing it changes no token.
# 10-bit video (HEVC from phones) converts differently between FFmpeg versions (about 2 grey levels on average).
SAME_PIXELS_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"})


@functools.cache
def torchcodec_missing() -> str | None:
    """Why torchcodec cannot be used here (None: it can)."""
    try:
        import torchcodec
        from torchcodec.decoders import VideoDecoder
    except ImportError:
        return "torchcodec is not installed (pip install torchcodec)"
    except Exception as err:  # it raises RuntimeError/OSError when no FFmpeg library it supports is found
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"torchcodec cannot load FFmpeg's libraries ({reason[:200]}); install FFmpeg (apt-get install ffmpeg)"
    try:
        from torchcodec.transforms import Resize  # noqa: F401
    except ImportError:
        Resize = None
    if Resize is None or "custom_frame_mappings" not in inspect.signature(VideoDecoder).parameters:
        return (f"torchcodec {getattr(torchcodec, '__version__', '?')} is too old (vidlab gives it its frame table "
                "and scales frames while decoding): pip install -U torchcodec")
    return None


def torchcodec_suits(table: FrameTable, decoder: str, keyframes: bool, size: tuple[int, int] | None = None) -> bool:
    """Whether `decoder` (Sampling.decoder) sends this video, its frames wanted at most `size`, to torchcodec."""
    if decoder == "pyav" or table.rotation % 360 or torchcodec_missing() is not None:
        return False
    scaled = scaled_size(table.width, table.height, size, table.rotation) != (table.width, table.height)
    same_pixels = table.pixel_format in SAME_PIXELS_FORMATS
    return decoder == "torchcodec" or (same_pixels and not (table.reorders or keyframes or scaled))


def frame_mappings(table: FrameTable) -> str:
    """The table as torchcodec's custom frame mappings (each frame's pts, duration and keyframe flag)."""
    last = max(int(round((table.end - float(table.times[-1])) / table.time_base)), 1)
    durations = np.append(np.diff(table.pts), last)
    frames = [{"pts": int(p), "duration": int(d), "key_frame": int(k)}
              for p, d, k in zip(table.pts, durations, table.keyframe)]
    return json.dumps({"frames": frames})


def decode_with_torchcodec(
    path: Path, table: FrameTable, wanted: list[int], size: tuple[int, int] | None = None
) -> Decoded | None:
    """The frames at `wanted` (table indices) as RGB uint8 arrays, at most `size` (width, height), decoded by
    torchcodec; None when it cannot give exactly those frames (the caller decodes them with PyAV)."""
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    order = sorted(set(wanted))
    width, height = scaled_size(table.width, table.height, size, table.rotation)
    transforms = [Resize((height, width))] if (width, height) != (table.width, table.height) else None
    try:
        # One FFmpeg thread: evaluation and training decode several videos at once instead (as with PyAV).
        batch = VideoDecoder(
            str(path), stream_index=table.stream_index, dimension_order="NHWC", num_ffmpeg_threads=1,
            transforms=transforms, custom_frame_mappings=frame_mappings(table),
        ).get_frames_at(order)
    except Exception as err:  # whatever it cannot decode, PyAV decodes (and skips damaged packets)
        log.debug("%s: torchcodec could not decode it (%s); decoding with PyAV", path, err)
        return None
    pts = np.round(batch.pts_seconds.double().numpy() / float(table.time_base)).astype(np.int64)
    frames = batch.data.numpy()
    if not np.array_equal(pts, table.pts[order]) or frames.shape[1:3] != (height, width):
        log.debug("%s: torchcodec gave other frames than the table's; decoding with PyAV", path)
        return None
    return Decoded(frames, rows={index: row for row, index in enumerate(order)}, decoded=len(order),
                   decoder="torchcodec")
