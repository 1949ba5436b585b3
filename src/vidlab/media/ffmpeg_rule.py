"""VideoLLaMA3's FFmpeg path, simulated on a frame table: which frames its command line outputs.

The original's `load_video` runs `ffmpeg [-ss S -t D] -i FILE -filter_complex fps=F:round=down
-f rawvideo [-ss S -t D] pipe:` (the cut before the input by default, after the filter with
precise_time=True; no fps filter when it is given a frame count). FFmpeg's command line (5.1, as
recorded in tests/data/fidelity) then works in four steps, each simulated here:

1. Input: timestamps are counted from the file's start (the earliest stream; in MPEG program and
   transport streams, when not seeking, the video's start); an input cut seeks to
   S and drops every frame that starts before it (a frame still on screen at S is dropped too),
   then keeps frames while they start less than D after the first kept one.
2. The fps filter (round=down): frame t goes to tick floor(t x F); ticks run from the first frame's
   tick until the end of the input (the first frame the input cut dropped, or the end of the last
   frame); each tick shows the last frame whose tick is at or before it.
3. An output cut (precise_time) keeps ticks from round(S x F), fewer than round(D x F) of them.
4. rawvideo output is constant-rate from time 0 (S for an output cut): a first frame that comes
   late is repeated to fill the gap, a frame more than a tick late is shown as often as it lasts,
   frames that come too early are dropped, and an output cut stops after D seconds of output.
   Without the fps filter the rate is the stream's nominal one (r_frame_rate), and each frame
   lasts its own packet duration: a variable-rate file is resampled at its nominal rate.

Written by hand: no library exposes FFmpeg's command-line timing rules (they live in fftools).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

# Times are pts x time base (denominators below a million): two different exact values of t x F
# differ by far more than this, so it only absorbs float error (a frame at exactly 2 s is tick 2).
_EPS = 1e-9


@dataclass(frozen=True)
class Command:
    """The original's cut as it passes it to FFmpeg (ffprobe's numbers, its own arithmetic)."""

    clip_start: float  # the stamp origin: the window start, or the video stream's start time
    length: float  # D: the cut's length, seconds (the file's length when not cut)
    cut: bool  # whether -ss/-t are given
    precise: bool  # the cut after the filter (output options) instead of before the input


def command(stream_start: float, file_duration: float, start: float | None, end: float | None,
            precise: bool) -> Command:
    """The original's arithmetic on ffprobe's start_time / duration (its load_video, before it runs FFmpeg)."""
    length = file_duration
    if start is not None:
        clip_start = max(stream_start, start)
        length -= clip_start - start
    else:
        clip_start = stream_start
    if end is not None:
        length = min(length, end - clip_start)
    return Command(clip_start, length, start is not None or end is not None, precise)


def option_seconds(value: float) -> float:
    """A number as FFmpeg reads it from the command line (str(value), microseconds, truncated: av_parse_time)."""
    micro = (Decimal(repr(float(value))) * 1_000_000).to_integral_value(rounding="ROUND_DOWN")
    return float(micro) / 1e6


def _round_near(x: float) -> int:
    """av_rescale_q's rounding: to nearest, halves away from zero."""
    return int(math.floor(abs(x) + 0.5 + _EPS)) * (1 if x >= 0 else -1)


def _llrint(x: float) -> int:
    """C's llrintf: to nearest, halves to even (Python's round)."""
    return int(round(x))


def _input_cut(rel: np.ndarray, cmd: Command, seek: float, length: float) -> tuple[int, int, float | None]:
    """Frames [first, last) the input cut keeps, and where its input ends (None: at the end of the file)."""
    t = rel - seek
    first = int(np.searchsorted(t, -_EPS, side="left"))
    if first >= len(t):
        return first, first, None
    last = int(np.searchsorted(t, t[first] + length - _EPS, side="left"))
    eof = float(t[last]) if last < len(t) else None  # the first frame the cut dropped ends the input
    return first, last, eof


def _cfr(positions: Sequence[float], durations: Sequence[float], frames: Sequence[int], limit: float | None,
         late_start_kept: bool) -> list[int]:
    """FFmpeg's constant-rate output (do_video_out, vsync cfr): positions and durations in output ticks.

    late_start_kept: vsync vscfr (a plain filter graph on a one-stream file): a first frame that comes
    late is not repeated; the output's clock starts at it.
    """
    out: list[int] = []
    sync = 0
    previous = None
    for x, duration, frame in zip(positions, durations, frames, strict=True):
        delta0 = x - sync
        delta = delta0 + duration
        copies, of_previous = 1, 0
        if delta0 < 0 < delta:
            delta0 = 0.0
        if late_start_kept and not out and delta0 >= 0.5:
            delta, delta0, sync = duration, 0.0, _llrint(x)
        if delta < -1.1:
            copies = 0
        elif delta > 1.1:
            copies = _llrint(delta)
            if delta0 > 1.1:
                of_previous = _llrint(delta0 - 0.6)
        for i in range(copies):
            if limit is not None and sync >= limit - _EPS:
                return out
            out.append(previous if i < of_previous and previous is not None else frame)
            sync += 1
        previous = frame
    return out


def ffmpeg_frames(times: Sequence[float], end: float, first_offset: float, nominal_rate: float, cmd: Command,
                  fps: float | None, single_stream: bool = False,
                  durations: Sequence[float] | None = None, ts_discont: bool = False) -> list[int]:
    """The indices of the frames the original's FFmpeg command outputs, in order (a frame may repeat).

    Args:
        times: each frame's time from the first frame; end: when the last one stops showing.
        first_offset: seconds from the file's start to the first frame.
        nominal_rate: the stream's r_frame_rate (the output rate without the fps filter).
        fps: the fps filter's rate; None: no fps filter (the original's frame-count mode).
        single_stream: the file holds only the video stream (then, without the fps filter, FFmpeg
            does not repeat a late first frame: vsync vscfr).
        durations: each frame's packet duration (seconds; 0: none); None: the gap to the next frame.
        ts_discont: a format whose timestamps may jump (MPEG program / transport streams): there, when
            not seeking, FFmpeg's time 0 is the start of the streams it uses (the video), not the file's.
    """
    seek = option_seconds(cmd.clip_start) if cmd.cut else 0.0
    if ts_discont and not (cmd.cut and not cmd.precise):
        first_offset = 0.0  # FFmpeg's "correcting start time based on the enabled streams"
    rel = np.asarray(times, dtype=np.float64) + first_offset  # FFmpeg's timeline: the file's start is 0
    stop = end + first_offset
    length = option_seconds(cmd.length) if cmd.cut else math.inf
    if cmd.cut and not cmd.precise:
        first, last, eof = _input_cut(rel, cmd, seek, length)
        t = rel[first:last] - seek
        eof_t = eof if eof is not None else stop - seek
        out_start, limit = 0.0, None
    else:
        first, last = 0, len(rel)
        t, eof_t = rel, stop
        out_start = seek if cmd.cut else 0.0
        limit = length if cmd.cut else None
    if last <= first:
        return []
    index = np.arange(first, last)
    if fps is not None:
        rate = fps
        tick_of = np.floor(t * fps + _EPS).astype(np.int64)
        ticks = np.arange(int(tick_of[0]), math.floor(eof_t * fps + _EPS))
        # tick n shows the last frame whose tick is n or before
        shown = index[np.searchsorted(tick_of, ticks, side="right") - 1]
        points, durations = ticks.astype(np.float64), np.ones(len(ticks))
        if cmd.cut and cmd.precise:  # the output cut (a trim filter after the fps filter), in whole ticks
            begin, count = _round_near(seek * fps), _round_near(length * fps)
            keep = points >= begin
            if keep.any():
                keep &= points - points[keep][0] < count
            points, durations, shown = points[keep], durations[keep], shown[keep]
    else:
        rate = nominal_rate
        if durations is None:
            durations = np.diff(np.append(t, eof_t if math.isfinite(eof_t) else t[-1]))
        else:
            durations = np.asarray(durations, dtype=np.float64)[first:last]
        points, durations, shown = t * rate, np.rint(durations * rate), index
        durations[durations <= 0] = 1.0  # no usable packet duration: the frame rate's
        if cmd.cut and cmd.precise:
            keep = t >= seek - _EPS
            if keep.any():
                keep &= t - t[keep][0] < length - _EPS
            points, durations, shown = points[keep], durations[keep], shown[keep]
    # FFmpeg computes these in integers (extra bits below the tick), then moves them 2^-17 ticks away
    # from 0 to avoid exact midpoints (adjust_frame_pts_to_encoder_tb); rounding away float error first
    positions = np.round(points - out_start * rate, 9)
    positions += np.sign(positions) / (1 << 17)
    return _cfr(positions.tolist(), durations.tolist(), shown.tolist(), limit * rate if limit is not None else None,
                late_start_kept=fps is None and single_stream)


def ffmpeg_stamps(cmd: Command, count: int, fps: float | None) -> list[float]:
    """The original's stamps: arange(start, start + length + 1/fps, 1/fps), or linspace over the length."""
    if fps is None:
        return np.linspace(cmd.clip_start, cmd.clip_start + cmd.length, count).tolist()
    step = 1 / fps
    stamps = np.arange(cmd.clip_start, cmd.clip_start + cmd.length + step, step)[:count].tolist()
    # Past the arange the original has fewer stamps than frames (its chat template then fails); vidlab
    # goes on at the same step.
    return stamps + [cmd.clip_start + k * step for k in range(len(stamps), count)]
