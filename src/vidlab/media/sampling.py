"""Which frames to take from a video: pure index arithmetic, no decoding.

The rules follow VideoLLaMA3's loader: one frame per 1/fps seconds (the frame on screen at each
tick, as FFmpeg's `fps` filter picks it); more than `max_frames` are thinned to that many evenly
spaced; `num_frames` asks for that many evenly spaced frames instead (TinyLLaVA-Video style).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from vidlab.settings import Sampling


def evenly_spaced(count: int, wanted: int) -> list[int]:
    """`wanted` positions spread evenly over `count` items, first and last included."""
    if wanted >= count:
        return list(range(count))
    return np.linspace(0, count - 1, wanted).astype(int).tolist()


def frame_on_screen(frame_times: Sequence[float], t: float) -> int:
    """Index of the frame shown at time `t`: the last one that started at or before it."""
    # A little slack so that a tick at 2.0 s takes the frame stamped 1.99999 s.
    return max(bisect.bisect_right(frame_times, t + 1e-6) - 1, 0)


def select_frames(
    frame_times: Sequence[float],
    end_of_video: float,
    sampling: Sampling,
    start: float | None = None,
    end: float | None = None,
) -> list[int]:
    """Indices (into `frame_times`, sorted ascending) of the frames to decode.

    `frame_times` are presentation times in seconds from the first frame; `end_of_video` is when
    the last frame stops showing; `start` / `end` are the clip window (None: the whole video), already
    checked against the video (`check_clip_window`).
    """
    start = start or 0.0
    end = min(end, end_of_video) if end is not None else end_of_video
    window = [i for i, t in enumerate(frame_times) if start <= t < end]
    if not window:  # a window shorter than one frame: take the frame on screen when it opens
        window = [frame_on_screen(frame_times, start)]

    if sampling.num_frames is not None:
        return [window[i] for i in evenly_spaced(len(window), sampling.num_frames)]

    # Container time bases round frame times; a tick within a millisecond of the end is past it.
    ticks = np.arange(start, end - 1e-3, 1.0 / sampling.fps)
    chosen = sorted({frame_on_screen(frame_times, float(t)) for t in ticks})
    if len(chosen) > sampling.max_frames:
        chosen = [chosen[i] for i in evenly_spaced(len(chosen), sampling.max_frames)]
    if len(chosen) < sampling.min_frames:
        chosen = [window[i] for i in evenly_spaced(len(window), sampling.min_frames)]
    return chosen
