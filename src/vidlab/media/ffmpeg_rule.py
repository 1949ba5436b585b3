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

The output is kept as runs (a frame and how many times in a row), and a stretch of ticks that each
come out once is passed in one step: the cost is the frame table's, never duration x fps.

Written by hand: no library exposes FFmpeg's command-line timing rules (they live in fftools).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import numpy as np

from vidlab.media.ranges import arange_at, arange_length, linspace_at

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


@dataclass(frozen=True)
class Runs:
    """FFmpeg's output frames as runs: frames[i] written counts[i] times in a row (no run is empty).

    At a high fps FFmpeg writes each source frame for many ticks; runs keep the cost at the number of
    source frames, not of ticks (duration x fps).
    """

    frames: np.ndarray  # int64 frame indices
    counts: np.ndarray  # int64, each at least 1

    def __len__(self) -> int:
        return int(self.counts.sum())

    def at(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """The frame written at each output position (positions below len(self))."""
        ends = np.cumsum(self.counts)
        return self.frames[np.searchsorted(ends, np.asarray(positions, dtype=np.int64), side="right")]

    def expand(self) -> list[int]:
        """Every output frame in order (len(self) of them: for short outputs and tests)."""
        return np.repeat(self.frames, self.counts).tolist()


class _Output:
    """Runs as they are written: single runs in lists, tick ranges as arrays."""

    def __init__(self) -> None:
        self.blocks: list[tuple[np.ndarray, np.ndarray]] = []
        self.frames: list[int] = []
        self.counts: list[int] = []

    def add(self, frame: int, count: int) -> None:
        if self.frames and self.frames[-1] == frame:
            self.counts[-1] += count
        else:
            self.frames.append(frame)
            self.counts.append(count)

    def add_block(self, frames: np.ndarray, counts: np.ndarray) -> None:
        self._flush()
        self.blocks.append((frames, counts))

    def runs(self) -> Runs:
        self._flush()
        if not self.blocks:
            return Runs(np.zeros(0, np.int64), np.zeros(0, np.int64))
        return Runs(np.concatenate([b[0] for b in self.blocks]).astype(np.int64),
                    np.concatenate([b[1] for b in self.blocks]).astype(np.int64))

    def _flush(self) -> None:
        if self.frames:
            self.blocks.append((np.asarray(self.frames, np.int64), np.asarray(self.counts, np.int64)))
            self.frames, self.counts = [], []


class _ConstantRate:
    """FFmpeg's constant-rate output (do_video_out, vsync cfr): input frames at positions and durations in
    output ticks go in one by one; each comes out 0 or more times. The output is kept as runs.

    late_start_kept: vsync vscfr (a plain filter graph on a one-stream file): a first frame that comes
    late is not repeated; the output's clock starts at it.
    """

    def __init__(self, limit: float | None, late_start_kept: bool) -> None:
        # FFmpeg stops before writing at sync >= limit - _EPS; sync is a whole number, so: at this sync
        stop = None if limit is None else limit - _EPS
        self.stop_at = None if stop is None or math.isnan(stop) or stop == math.inf else (
            -math.inf if stop == -math.inf else math.ceil(stop))
        self.late_start_kept = late_start_kept
        self.sync = 0
        self.previous: int | None = None
        self.output = _Output()
        self.written = False

    def room(self, count: int) -> int:
        """How many of `count` further copies are written before the output's length runs out."""
        if self.stop_at is None:
            return count
        return int(min(count, max(self.stop_at - self.sync, 0)))

    def write(self, frame: int, count: int) -> bool:
        """`count` copies of `frame`; False when the output stopped before all were written."""
        allowed = self.room(count)
        if allowed:
            self.output.add(frame, allowed)
            self.sync += allowed
            self.written = True
        return allowed == count

    def write_block(self, frames: np.ndarray, counts: np.ndarray) -> None:
        """Runs of one copy per tick, all within the output's length (see room)."""
        if len(frames):
            self.output.add_block(frames, counts)
            self.sync += int(counts.sum())
            self.previous = int(frames[-1])
            self.written = True

    def step(self, x: float, duration: float, frame: int) -> bool:
        """One input frame, exactly as do_video_out; False when the output stopped."""
        delta0 = x - self.sync
        delta = delta0 + duration
        copies, of_previous = 1, 0
        if delta0 < 0 < delta:
            delta0 = 0.0
        if self.late_start_kept and not self.written and delta0 >= 0.5:
            delta, delta0, self.sync = duration, 0.0, _llrint(x)
        if delta < -1.1:
            copies = 0
        elif delta > 1.1:
            copies = _llrint(delta)
            if delta0 > 1.1:
                of_previous = _llrint(delta0 - 0.6)
        repeated = min(of_previous, copies) if self.previous is not None else 0
        if repeated and not self.write(self.previous, repeated):
            return False
        if copies - repeated and not self.write(frame, copies - repeated):
            return False
        self.previous = frame
        return True


def _cfr(positions: Sequence[float], durations: Sequence[float], frames: Sequence[int], limit: float | None,
         late_start_kept: bool) -> Runs:
    """FFmpeg's constant-rate output of frames at positions and durations in output ticks, as runs."""
    clock = _ConstantRate(limit, late_start_kept)
    for x, duration, frame in zip(positions, durations, frames, strict=True):
        if not clock.step(x, duration, frame):
            break
    return clock.output.runs()


def _positions(ticks: np.ndarray, origin: float) -> np.ndarray:
    """Output positions of fps-filter ticks: tick - origin (origin = the output cut's start x fps), as FFmpeg
    computes them in integers (extra bits below the tick), then moved 2^-17 ticks away from 0 to avoid exact
    midpoints (adjust_frame_pts_to_encoder_tb); rounding away float error first."""
    positions = np.round(ticks.astype(np.float64) - origin, 9)
    positions += np.sign(positions) / (1 << 17)
    return positions


def _one_copy_each(tick: int, end: int, sync: int, sign: int, origin: float) -> bool:
    """Whether every tick in [tick, end) is certainly written exactly once, starting at output `sync`.

    Then position - sync stays (tick - origin + sign x 2^-17) - sync at each tick, up to float error: at most
    5e-10 from rounding to 9 decimals plus a few units in the last place of the tick (bounded here with room to
    spare). One copy each while delta = position - sync + 1 lies in [-1.1, 1.5) (_ConstantRate.step).
    """
    ideal = Fraction(tick - sync) - Fraction(origin) + 1 + Fraction(sign, 1 << 17)
    error = Fraction(4, 10**9) + (max(abs(tick), abs(end)) + abs(Fraction(origin)) + 4) / Fraction(1 << 48)
    return ideal - error > Fraction(-1.1) and ideal + error < Fraction(3, 2)


def _fps_output(tick_of: np.ndarray, index: np.ndarray, first_tick: int, end_tick: int, origin: float,
                limit: float | None) -> Runs:
    """The constant-rate output of fps-filter ticks [first_tick, end_tick), without visiting each tick.

    Tick n shows the last frame whose tick is n or before. Ticks are one apart, so once a tick is written
    once, every later tick is too while position - sync stays clear of FFmpeg's rounding thresholds: such
    stretches are written in bulk (_one_copy_each); the others (the first tick, a tick where the output
    catches up, a stretch within float error of a threshold) are simulated tick by tick, exactly, in
    blocks of at most 65536 ticks: memory stays bounded, though such a stretch costs its ticks' time.
    """
    last_of_tick = np.append(tick_of[1:] != tick_of[:-1], True)
    run_ticks, run_frames = tick_of[last_of_tick], index[last_of_tick]

    def shown(tick: int) -> int:
        return int(run_frames[np.searchsorted(run_ticks, tick, side="right") - 1])

    def tick_runs(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        lo = int(np.searchsorted(run_ticks, a, side="right")) - 1
        hi = int(np.searchsorted(run_ticks, b - 1, side="right"))
        starts = np.maximum(run_ticks[lo:hi], a)
        ends = np.append(run_ticks[lo + 1:hi], b)
        return run_frames[lo:hi], ends - starts

    def first_where(predicate: Callable[[np.ndarray], np.ndarray]) -> int:
        """The first tick in [first_tick, end_tick) whose position satisfies a predicate monotone in the tick."""
        lo, hi = first_tick, end_tick
        while lo < hi:
            mid = (lo + hi) // 2
            if predicate(np.round(np.array([mid], dtype=np.float64) - origin, 9))[0]:
                hi = mid
            else:
                lo = mid + 1
        return lo

    # positions rise with the tick: negative, then zero, then positive (the 2^-17 nudge's sign)
    zero_from = first_where(lambda z: z >= 0)
    positive_from = first_where(lambda z: z > 0)
    clock = _ConstantRate(limit, late_start_kept=False)
    tick, scan = first_tick, 16
    while tick < end_tick:
        if tick < zero_from:
            sign, end = -1, zero_from
        elif tick < positive_from:
            sign, end = 0, positive_from
        else:
            sign, end = 1, end_tick
        if _one_copy_each(tick, end, clock.sync, sign, origin):
            written = clock.room(end - tick)
            if written:
                clock.write_block(*tick_runs(tick, tick + written))
            if written < end - tick:
                break
            tick, scan = end, 16
            continue
        # tick by tick, a block at a time: the ticks written once each, then the first that is not
        ticks = np.arange(tick, min(end, tick + scan), dtype=np.int64)
        x = _positions(ticks, origin)
        delta = (x - (clock.sync + np.arange(len(ticks), dtype=np.int64))) + 1.0
        once = (delta >= -1.1) & ~((delta > 1.1) & (np.rint(delta) != 1))
        settled = len(ticks) if once.all() else int(np.argmin(once))
        written = clock.room(settled)
        if written:
            clock.write_block(*tick_runs(tick, tick + written))
        if written < settled:
            break
        tick += settled
        if settled < len(ticks):
            if not clock.step(float(x[settled]), 1.0, shown(tick)):
                break
            tick += 1
        scan = min(scan * 2, 1 << 16)
    return clock.output.runs()


def ffmpeg_runs(times: Sequence[float], end: float, first_offset: float, nominal_rate: float, cmd: Command,
                fps: float | None, single_stream: bool = False,
                durations: Sequence[float] | None = None, ts_discont: bool = False) -> Runs:
    """The frames the original's FFmpeg command outputs, in order (a frame may repeat), as runs.

    Args:
        times: each frame's time from the first frame; end: when the last one stops showing.
        first_offset: seconds from the file's start to the first frame.
        nominal_rate: the stream's r_frame_rate (the output rate without the fps filter).
        cmd: the original's cut.
        fps: the fps filter's rate; None: no fps filter (the original's frame-count mode).
        single_stream: the file holds only the video stream (then, without the fps filter, FFmpeg
            does not repeat a late first frame: vsync vscfr).
        durations: each frame's packet duration (seconds; 0: none); None: the gap to the next frame.
        ts_discont: a format whose timestamps may jump (MPEG program / transport streams): there, when
            not seeking, FFmpeg's time 0 is the start of the streams it uses (the video), not the file's.

    Costs O(frames in the table + runs written), whatever the fps: ticks are never listed one by one.
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
        return _Output().runs()
    index = np.arange(first, last)
    if fps is not None:
        rate = fps
        tick_of = np.floor(t * fps + _EPS).astype(np.int64)
        first_tick, end_tick = int(tick_of[0]), math.floor(eof_t * fps + _EPS)
        if cmd.cut and cmd.precise:  # the output cut (a trim filter after the fps filter), in whole ticks
            begin, count = _round_near(seek * fps), _round_near(length * fps)
            first_tick = max(first_tick, begin)
            end_tick = min(end_tick, first_tick + count)
        return _fps_output(tick_of, index, first_tick, end_tick, out_start * rate,
                           limit * rate if limit is not None else None)
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
    # the same rounding and 2^-17 nudge as _positions
    positions = np.round(points - out_start * rate, 9)
    positions += np.sign(positions) / (1 << 17)
    return _cfr(positions.tolist(), durations.tolist(), shown.tolist(), limit * rate if limit is not None else None,
                late_start_kept=single_stream)


def ffmpeg_stamps(cmd: Command, count: int, fps: float | None, positions: Sequence[int] | np.ndarray) -> list[float]:
    """The original's stamps of `count` frames, at these positions: arange(start, start + length + 1/fps, 1/fps),
    or linspace over the length (computed at the positions only: `count` may be duration x fps)."""
    positions = np.asarray(positions, dtype=np.int64)
    if fps is None:
        return linspace_at(cmd.clip_start, cmd.clip_start + cmd.length, count, positions).tolist()
    step = 1 / fps
    stamps = arange_at(cmd.clip_start, step, positions)
    # Past the arange the original has fewer stamps than frames (its chat template then fails); vidlab
    # goes on at the same step.
    past = positions >= arange_length(cmd.clip_start, cmd.clip_start + cmd.length + step, step)
    stamps[past] = cmd.clip_start + positions[past].astype(np.float64) * step
    return stamps.tolist()
