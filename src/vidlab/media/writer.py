"""Writing videos through PyAV: for generated data sets, sample clips and tests."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Container suffix -> (codec, pixel format) that PyAV's bundled FFmpeg can encode.
CODECS = {
    ".mp4": ("libx264", "yuv420p"),
    ".mov": ("libx264", "yuv420p"),
    ".mkv": ("libx264", "yuv420p"),
    ".webm": ("libvpx-vp9", "yuv420p"),
    ".avi": ("mpeg4", "yuv420p"),
    ".gif": ("gif", "rgb8"),
}

# Timestamps are written in milliseconds, fine enough for any rate and for uneven gaps.
TIME_BASE = Fraction(1, 1000)


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float = 8.0,
    times: Sequence[float] | None = None,
    *,
    rotation: int = 0,
    faststart: bool = False,
    encoder_options: dict[str, str] | None = None,
) -> Path:
    """Encode RGB uint8 frames (height, width, 3) to `path`, atomically.

    Args:
        path: output file; its suffix picks the container and codec (see CODECS).
        frames: the frames, all the same size; width and height even for H.264.
        fps: nominal frame rate; frame i is shown at i / fps unless `times` is given.
        times: presentation time of each frame in seconds (uneven gaps give a variable frame
            rate; a first time above 0 gives a stream that does not start at 0).
        rotation: display rotation in the container, counter-clockwise degrees, as phones record
            portrait video (the frames are stored as given; players turn them).
        faststart: mp4 / mov: put the index before the frames, as files for streaming are.
        encoder_options: replace the codec options (H.264 default: crf 18, preset veryfast, which
            uses B-frames; e.g. {"preset": "ultrafast"} for none).
    """
    path = Path(path)
    codec, pix_fmt = CODECS.get(path.suffix.lower(), CODECS[".mp4"])
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        options = {"movflags": "+faststart"} if faststart else {}
        with av.open(str(tmp), mode="w", options=options) as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
            stream.pix_fmt = pix_fmt
            stream.time_base = TIME_BASE
            stream.codec_context.time_base = TIME_BASE
            if rotation:
                stream.set_display_rotation(rotation)
            if codec == "libx264":
                # Quality high enough that small synthetic shapes keep their colours. The macroblock tree
                # (rate control looking ahead across threads) made identical frames encode differently
                # from run to run; without it a data set is byte-identical for a seed.
                stream.options = {"crf": "18", "preset": "veryfast", "x264-params": "mbtree=0"}
            if encoder_options is not None:
                stream.options = {**stream.options, **encoder_options}
            for i, rgb in enumerate(frames):
                if i == 0:
                    stream.height, stream.width = rgb.shape[:2]
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, dtype=np.uint8), format="rgb24")
                t = times[i] if times is not None else i / fps
                frame.pts = round(t / TIME_BASE)
                frame.time_base = TIME_BASE
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
