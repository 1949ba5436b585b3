"""Which frames to take from a video, and the time the prompt announces for each: arithmetic on frame times.

Four rules (`Sampling.frame_rule`):

- "videollama3" (the default): the frames and stamps VideoLLaMA3's own loader gives
  (`load_video` in its mm_utils.py), which the released checkpoints were trained and evaluated
  with: its FFmpeg command line (the fps filter with round=down, constant-rate output, a clip
  window cut before decoding or, with `precise_time`, after the filter) simulated step by step in
  ffmpeg_rule.py, stamped start + n/fps as the original stamps them (start: the stream's start
  time, or the clip's start: a time in the video, not 0), more than max_frames thinned by
  linspace. Frame folders, GIFs and clips shorter than a second go, as in the original, by frame
  index at a fixed rate (3 frames a second for folders, 25 for GIFs): the middle frame of each
  1/fps-long run, stamped index / rate. tests/test_fidelity_frames.py holds it to recordings of
  the original itself.
- "on_screen": the frame on screen at each tick n/fps, each frame at most once, stamped with its
  true time from the clip start; more than max_frames thinned evenly (vidlab 0.1's rule).
- "uniform": TinyLLaVA-Video's loader (pytorchvideo's decord reader, then linspace): num_frames, or
  without it int(frames / average rate) frames (its "1 fps"), at most max_frames, at
  linspace(0, frames - 1, n) floored over all the video's frames (a frame repeats when there are
  fewer), stamped with their true times. tests/test_seeds_tinyllava_video.py holds it to the original.
- "stride": LLaMA-VID's loader (decord, then every round(average rate / fps)-th frame from the first:
  its "1 fps"), more than max_frames thinned by linspace (the original has no limit), stamped with
  their true times. tests/test_seeds_llama_vid.py holds it to the original.

`num_frames` takes that many evenly spaced frames instead (VideoLLaMA3: FFmpeg's frames at the
stream's nominal rate, linspace);
`min_frames` tops up a short video evenly. With `keyframes` each frame is replaced by the nearest
keyframe (no decoding between keyframes: for very long videos), stamped with its true time.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from vidlab.media.ffmpeg_rule import command, ffmpeg_runs, ffmpeg_stamps
from vidlab.media.ranges import arange_at, arange_length
from vidlab.settings import Sampling

# The original loader reads GIFs by index, assuming this rate (imageio gives no timing).
GIF_RATE = 25.0
# FFmpeg reads an fps option as a fraction with a denominator of at most this (av_parse_video_rate).
_RATE_DENOMINATOR = 1001000


@dataclass(frozen=True)
class Timeline:
    """What the rules need to know of a video's frames.

    Attributes:
        times: each frame's presentation time, seconds from the first frame, ascending.
        end: when the last frame stops showing, seconds from the first frame.
        first_offset: seconds from the file's time 0 to the first frame (FFmpeg's timeline).
        stream_start: the stream's start time (ffprobe's start_time): the original's stamp origin.
        file_duration: the file's length (ffprobe's format duration); None: first_offset + end.
        rate: the average frame rate.
        index_rate: the original reads this video by frame index at this rate (frame folders, GIFs).
        keyframe: whether each frame is a keyframe (for `Sampling.keyframes`); None: all are.
        nominal_rate: the stream's r_frame_rate (FFmpeg's output rate without an fps filter); None: rate.
        single_stream: the file holds no stream but the video (FFmpeg's output timing depends on it).
        durations: each frame's packet duration, seconds (0: none given); None: unknown.
        ts_discont: the container's timestamps may jump (MPEG program and transport streams).
    """

    times: Sequence[float]
    end: float
    first_offset: float = 0.0
    stream_start: float = 0.0
    file_duration: float | None = None
    rate: float = 25.0
    index_rate: float | None = None
    keyframe: Sequence[bool] | None = None
    nominal_rate: float | None = None
    single_stream: bool = False
    durations: Sequence[float] | None = None
    ts_discont: bool = False


@dataclass(frozen=True)
class Picks:
    """The frames to show (indices into the timeline; the same frame may come twice) and their stamps."""

    frames: list[int]
    stamps: list[float]
    numpy_stamps: bool = False  # the original's stamps are numpy floats here: its prompt rounds them numpy-style

    def __len__(self) -> int:
        return len(self.frames)


def evenly_spaced(count: int, wanted: int) -> list[int]:
    """`wanted` positions spread evenly over `count` items, first and last included (numpy's linspace, floored)."""
    if wanted >= count:
        return list(range(count))
    return np.linspace(0, count - 1, wanted).astype(int).tolist()


def frame_on_screen(frame_times: Sequence[float], t: float) -> int:
    """Index of the frame shown at time `t`: the last one that started at or before it."""
    # A little slack so that a tick at 2.0 s takes the frame stamped 1.99999 s.
    return max(bisect.bisect_right(frame_times, t + 1e-6) - 1, 0)


def pick_frames(timeline: Timeline, sampling: Sampling, start: float | None = None,
                end: float | None = None) -> Picks:
    """The frames `sampling` asks for and their stamps; start / end (seconds) are the clip window,
    already checked against the video (`check_clip_window`)."""
    if sampling.frame_rule == "on_screen":
        picks = _on_screen(timeline, sampling, start, end)
    elif sampling.frame_rule == "uniform":
        picks = _uniform(timeline, sampling, start, end)
    elif sampling.frame_rule == "stride":
        picks = _stride(timeline, sampling, start, end)
    elif timeline.index_rate is not None or (start is not None and end is not None and end - start < 1):
        picks = _by_index(timeline, sampling, start, end)
    else:
        picks = _fps_filter(timeline, sampling, start, end)
    if not picks.frames:  # a window that holds no frame start: the frame on screen when it opens
        first = frame_on_screen(timeline.times, start or 0.0)
        picks = Picks([first], [0.0 if sampling.frame_rule == "on_screen" else float(start or 0.0)], picks.numpy_stamps)
    picks = _top_up(timeline, picks, sampling, start, end)
    return _nearest_keyframes(timeline, picks, start) if sampling.keyframes else picks


def select_frames(frame_times: Sequence[float], end_of_video: float, sampling: Sampling,
                  start: float | None = None, end: float | None = None) -> list[int]:
    """The frame indices `pick_frames` gives for plain frame times (a video that starts at 0)."""
    return pick_frames(Timeline(frame_times, end_of_video), sampling, start, end).frames


def _window(timeline: Timeline, start: float | None, end: float | None) -> list[int]:
    """Indices of the frames that start inside the clip window."""
    hi = min(end, timeline.end) if end is not None else timeline.end
    times = np.asarray(timeline.times)
    first, last = np.searchsorted(times, [start or 0.0, hi], side="left")
    return list(range(int(first), int(last)))


def _on_screen(timeline: Timeline, sampling: Sampling, start: float | None, end: float | None) -> Picks:
    times = np.asarray(timeline.times)
    lo = start or 0.0
    hi = min(end, timeline.end) if end is not None else timeline.end
    window = _window(timeline, start, end) or [frame_on_screen(times, lo)]
    if sampling.num_frames is not None:
        chosen = [window[i] for i in evenly_spaced(len(window), sampling.num_frames)]
    else:
        # Container time bases round frame times; a tick within a millisecond of the end is past it.
        chosen = _shown_at_ticks(times, lo, hi - 1e-3, 1.0 / sampling.fps)
        if len(chosen) > sampling.max_frames:
            chosen = [chosen[i] for i in evenly_spaced(len(chosen), sampling.max_frames)]
    return Picks(chosen, [max(float(times[i]) - lo, 0.0) for i in chosen])


def _uniform(timeline: Timeline, sampling: Sampling, start: float | None, end: float | None) -> Picks:
    """TinyLLaVA-Video's rule: n frames at linspace over the window's frames, repeats allowed."""
    window = _window(timeline, start, end) or [frame_on_screen(timeline.times, start or 0.0)]
    wanted = sampling.num_frames or min(sampling.max_frames, max(1, int(len(window) / timeline.rate)))
    chosen = [window[i] for i in np.linspace(0, len(window) - 1, wanted).astype(int)]
    return Picks(chosen, [max(float(timeline.times[i]) - (start or 0.0), 0.0) for i in chosen])


def _stride(timeline: Timeline, sampling: Sampling, start: float | None, end: float | None) -> Picks:
    """LLaMA-VID's rule: every round(rate / fps)-th frame of the window from its first (Python's round, at least 1)."""
    window = _window(timeline, start, end) or [frame_on_screen(timeline.times, start or 0.0)]
    if sampling.num_frames is not None:
        chosen = [window[i] for i in evenly_spaced(len(window), sampling.num_frames)]
    else:
        chosen = window[:: max(1, round(timeline.rate / sampling.fps))]
        if len(chosen) > sampling.max_frames:
            chosen = [chosen[i] for i in evenly_spaced(len(chosen), sampling.max_frames)]
    return Picks(chosen, [max(float(timeline.times[i]) - (start or 0.0), 0.0) for i in chosen])


def _shown_at_ticks(times: np.ndarray, start: float, stop: float, step: float) -> list[int]:
    """Each frame on screen at some tick of np.arange(start, stop, step) (with a little slack, as
    frame_on_screen), once, in order; without listing the ticks (there are duration x fps of them)."""
    count = arange_length(start, stop, step)
    if count == 0 or len(times) == 0:
        return []
    # Tick i shows frame f when times[f] <= tick_i + 1e-6 < times[f + 1]: the first tick that reaches each
    # frame, found by bisection (ticks rise with i) from a bracket around its estimate.
    reach = np.asarray(times, dtype=np.float64)

    def reaches(i: np.ndarray, time: np.ndarray) -> np.ndarray:
        return arange_at(start, step, i) + 1e-6 >= time

    with np.errstate(all="ignore"):
        guess = np.nan_to_num(np.ceil((reach - 1e-6 - start) / step), nan=0.0, posinf=count, neginf=0.0)
    guess = np.clip(guess, 0, count).astype(np.int64)
    lo, hi = np.maximum(guess - 2, 0), np.minimum(guess + 2, count)
    # a bracket holds when the tick before it falls short and its last tick reaches (or it ends at count)
    short = (lo == 0) | ~reaches(np.maximum(lo - 1, 0), reach)
    held = short & ((hi == count) | reaches(np.minimum(hi, count - 1), reach))
    lo[~held], hi[~held] = 0, count
    while len(open_ := np.flatnonzero(lo < hi)):
        mid = (lo[open_] + hi[open_]) // 2
        reached = reaches(mid, reach[open_])
        hi[open_[reached]] = mid[reached]
        lo[open_[~reached]] = mid[~reached] + 1
    shown_for = np.diff(np.append(lo, count))  # how many ticks show each frame
    chosen = np.flatnonzero(shown_for > 0).tolist()
    if lo[0] > 0 and (not chosen or chosen[0] != 0):  # ticks before the first frame show the first frame
        chosen.insert(0, 0)
    return chosen


def _by_index(timeline: Timeline, sampling: Sampling, start: float | None, end: float | None) -> Picks:
    """The original's index rule (its load_video_from_ids): frames by position at a fixed rate."""
    rate = timeline.index_rate or timeline.rate
    count = len(timeline.times)
    if start is not None and end is not None:
        start, end = max(start, 0.0), max(end, 0.0)
        if start > end:
            start, end = end, start
        elif start == end:
            end = start + 1
    first = 0 if start is None else max(int(start * rate) - 1, 0)
    last = count - 1 if end is None else min(int(end * rate) - 1, count - 1)
    indices = list(range(first, last + 1))
    length = len(indices)
    if not indices:
        return Picks([], [])
    most = sampling.num_frames or sampling.max_frames
    if sampling.num_frames is None and length / rate < most:
        # the middle frame of each run of rate // fps frames (at least one frame per run)
        run = max(min(rate // sampling.fps, length), 1)
        chosen = np.arange(run // 2, length, run, dtype=int).tolist()
    else:
        chosen = evenly_spaced(length, most)
    frames = [indices[i] for i in chosen]
    return Picks(frames, [frame / rate for frame in frames])


def _fps_filter(timeline: Timeline, sampling: Sampling, start: float | None, end: float | None) -> Picks:
    """The original's FFmpeg path (simulated in ffmpeg_rule.py), its stamps and its linspace thinning."""
    length = timeline.file_duration if timeline.file_duration is not None else timeline.first_offset + timeline.end
    cmd = command(timeline.stream_start, length, start, end, bool(sampling.precise_time))
    fps = None if sampling.num_frames is not None else float(_rate_fraction(sampling.fps))
    nominal = timeline.nominal_rate or timeline.rate
    runs = ffmpeg_runs(timeline.times, timeline.end, timeline.first_offset, nominal, cmd, fps,
                       timeline.single_stream, timeline.durations, timeline.ts_discont)
    count = len(runs)
    most = sampling.num_frames if sampling.num_frames is not None else sampling.max_frames
    # the frames and stamps at the kept positions only: at a high fps there are duration x fps of them
    kept = evenly_spaced(count, most)
    frames = runs.at(kept).tolist()
    stamps = ffmpeg_stamps(cmd, count, None if fps is None else sampling.fps, kept)
    return Picks(frames, stamps, numpy_stamps=True)


def _rate_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(_RATE_DENOMINATOR)


def _top_up(timeline: Timeline, picks: Picks, sampling: Sampling, start: float | None, end: float | None) -> Picks:
    """min_frames (vidlab's): too few frames become that many evenly spaced, stamped with their true times."""
    if len(picks) >= sampling.min_frames:
        return picks
    window = _window(timeline, start, end)
    if len(window) <= len(picks):
        return picks
    chosen = [window[i] for i in evenly_spaced(len(window), sampling.min_frames)]
    origin = 0.0 if sampling.frame_rule == "videollama3" else (start or 0.0)
    return Picks(chosen, [max(float(timeline.times[i]) - origin, 0.0) for i in chosen])


def _nearest_keyframes(timeline: Timeline, picks: Picks, start: float | None) -> Picks:
    """Each pick replaced by the keyframe nearest in time, each keyframe once, stamped with its true time."""
    if timeline.keyframe is None:
        return picks
    keys = [i for i, is_key in enumerate(timeline.keyframe) if is_key]
    key_times = [timeline.times[i] for i in keys]
    chosen: list[int] = []
    for frame in picks.frames:
        t = float(timeline.times[frame])
        at = bisect.bisect_left(key_times, t)
        near = min((a for a in (at - 1, at) if 0 <= a < len(keys)), key=lambda a: abs(key_times[a] - t))
        if not chosen or chosen[-1] != keys[near]:
            chosen.append(keys[near])
    origin = start or 0.0
    return Picks(chosen, [max(float(timeline.times[i]) - origin, 0.0) for i in chosen])
