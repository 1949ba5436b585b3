"""The frame rules at any fps cost the frame table's size, not duration x fps, and give the same results.

The rules used to list every tick (np.arange of duration x fps values) and walk FFmpeg's
constant-rate output one tick at a time in Python: `fps: 1e6` on a 40 s file held 3 GB, `1e8`
failed (issue 23). The code below is that implementation, kept here as the reference: the run-length
rules in vidlab/media must give bit-identical frames and stamps on random frame tables (constant
and variable rate, late starts, freezes, windows in both precise_time modes, fps 0.1 to 1000,
num_frames, max_frames), and pick frames at fps 1e6 / 1e8 with a small peak of memory.
"""

from __future__ import annotations

import math
import random
import tracemalloc
from collections.abc import Sequence

import numpy as np
import pytest

from vidlab.media import ffmpeg_rule
from vidlab.media.ffmpeg_rule import (
    _EPS,
    Command,
    _input_cut,
    _llrint,
    _round_near,
    command,
    ffmpeg_runs,
    option_seconds,
)
from vidlab.media.ranges import arange_at, arange_length, linspace_at
from vidlab.media.sampling import Timeline, _fps_filter, _on_screen, _rate_fraction, evenly_spaced, pick_frames
from vidlab.settings import Sampling

# --------------------------------------------------------------------------- the reference (the former code)


def reference_cfr(positions: Sequence[float], durations: Sequence[float], frames: Sequence[int],
                  limit: float | None, late_start_kept: bool) -> list[int]:
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


def reference_ffmpeg_frames(times, end, first_offset, nominal_rate, cmd: Command, fps, single_stream=False,
                            durations=None, ts_discont=False) -> list[int]:
    seek = option_seconds(cmd.clip_start) if cmd.cut else 0.0
    if ts_discont and not (cmd.cut and not cmd.precise):
        first_offset = 0.0
    rel = np.asarray(times, dtype=np.float64) + first_offset
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
        shown = index[np.searchsorted(tick_of, ticks, side="right") - 1]
        points, durations = ticks.astype(np.float64), np.ones(len(ticks))
        if cmd.cut and cmd.precise:
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
        durations[durations <= 0] = 1.0
        if cmd.cut and cmd.precise:
            keep = t >= seek - _EPS
            if keep.any():
                keep &= t - t[keep][0] < length - _EPS
            points, durations, shown = points[keep], durations[keep], shown[keep]
    positions = np.round(points - out_start * rate, 9)
    positions += np.sign(positions) / (1 << 17)
    return reference_cfr(positions.tolist(), durations.tolist(), shown.tolist(),
                         limit * rate if limit is not None else None, late_start_kept=fps is None and single_stream)


def reference_ffmpeg_stamps(cmd: Command, count: int, fps: float | None) -> list[float]:
    if fps is None:
        return np.linspace(cmd.clip_start, cmd.clip_start + cmd.length, count).tolist()
    step = 1 / fps
    stamps = np.arange(cmd.clip_start, cmd.clip_start + cmd.length + step, step)[:count].tolist()
    return stamps + [cmd.clip_start + k * step for k in range(len(stamps), count)]


def reference_fps_filter(timeline: Timeline, sampling: Sampling, start, end) -> tuple[list[int], list[float]]:
    length = timeline.file_duration if timeline.file_duration is not None else timeline.first_offset + timeline.end
    cmd = command(timeline.stream_start, length, start, end, bool(sampling.precise_time))
    fps = None if sampling.num_frames is not None else float(_rate_fraction(sampling.fps))
    nominal = timeline.nominal_rate or timeline.rate
    frames = reference_ffmpeg_frames(timeline.times, timeline.end, timeline.first_offset, nominal, cmd, fps,
                                     timeline.single_stream, timeline.durations, timeline.ts_discont)
    stamps = reference_ffmpeg_stamps(cmd, len(frames), None if fps is None else sampling.fps)
    most = sampling.num_frames if sampling.num_frames is not None else sampling.max_frames
    if len(frames) > most:
        chosen = evenly_spaced(len(frames), most)
        frames, stamps = [frames[i] for i in chosen], [stamps[i] for i in chosen]
    return frames, stamps


def reference_on_screen(timeline: Timeline, sampling: Sampling, start, end) -> tuple[list[int], list[float]]:
    times = np.asarray(timeline.times)
    lo = start or 0.0
    hi = min(end, timeline.end) if end is not None else timeline.end
    first, last = np.searchsorted(times, [start or 0.0, hi], side="left")
    window = list(range(int(first), int(last))) or [max(int(np.searchsorted(times, lo + 1e-6, "right")) - 1, 0)]
    if sampling.num_frames is not None:
        chosen = [window[i] for i in evenly_spaced(len(window), sampling.num_frames)]
    else:
        ticks = np.arange(lo, hi - 1e-3, 1.0 / sampling.fps)
        on_screen = np.maximum(np.searchsorted(times, ticks + 1e-6, side="right") - 1, 0)
        chosen = np.unique(on_screen).tolist()
        if len(chosen) > sampling.max_frames:
            chosen = [chosen[i] for i in evenly_spaced(len(chosen), sampling.max_frames)]
    return chosen, [max(float(times[i]) - lo, 0.0) for i in chosen]


# --------------------------------------------------------------------------- random frame tables


def quantized(seconds: np.ndarray, time_base: int) -> np.ndarray:
    """Times as a frame table holds them: whole pts in a time base, times pts x time base."""
    pts = np.round(seconds * time_base).astype(np.int64)
    return (pts - pts[0]).astype(np.float64) / time_base


def random_timeline(rng: random.Random) -> Timeline:
    rate = rng.choice([1.0, 2.0, 10.0, 24.0, 25.0, 30.0, 30000 / 1001, 60.0, rng.uniform(0.5, 60)])
    time_base = rng.choice([90000, 1000, 12800, 15360, 30000, 600, int(round(rate)) or 1])
    count = rng.choice([1, 2, 3, rng.randint(4, 40), rng.randint(40, 400)])
    kind = rng.choice(["cfr", "cfr", "vfr", "freezes", "jitter"])
    if kind == "cfr":
        seconds = np.arange(count) / rate
    elif kind == "vfr":
        seconds = np.cumsum([0.0] + [rng.expovariate(rate) for _ in range(count - 1)])
    elif kind == "freezes":
        gaps = [rng.choice([1 / rate] * 6 + [rng.uniform(0.5, 8)]) for _ in range(count - 1)]
        seconds = np.cumsum([0.0] + gaps)
    else:
        seconds = np.sort(np.arange(count) / rate + np.asarray([rng.uniform(-0.2, 0.2) / rate for _ in range(count)]))
    times = quantized(np.asarray(seconds, dtype=np.float64), time_base)
    times = np.maximum.accumulate(times)
    if rng.random() < 0.1:  # not a table's own form (its first frame is at 0), but both rules take it
        times = times + rng.uniform(0, 0.5)
    frame = 1 / rate if count < 2 else float(np.median(np.diff(times))) or 1 / rate
    end = float(times[-1]) + frame
    first_offset = rng.choice([0.0, 0.0, rng.choice([0.021, 0.5, 1.0, 1.4]), rng.uniform(0, 3)])
    stream_start = rng.choice([first_offset, 0.0, first_offset + rng.uniform(-0.1, 0.1)])
    file_duration = rng.choice([None, first_offset + end, first_offset + end + rng.uniform(0, 2),
                                max(first_offset + end - rng.uniform(0, 0.2), 0.01)])
    durations = None
    if rng.random() < 0.3:
        durations = [rng.choice([frame, frame, 0.0, 2 * frame]) for _ in range(count)]
    return Timeline(times.tolist(), end, first_offset=first_offset, stream_start=stream_start,
                    file_duration=file_duration, rate=rate, nominal_rate=rng.choice([None, rate, 2 * rate]),
                    single_stream=rng.random() < 0.5, durations=durations, ts_discont=rng.random() < 0.2)


def random_fps(rng: random.Random) -> float:
    return rng.choice([1.0, 2.0, 0.5, 0.1, 3.0, 30.0, 29.97, 1000.0, 10 ** rng.uniform(-1, 3), rng.uniform(0.1, 5)])


def random_window(rng: random.Random, length: float) -> tuple[float | None, float | None]:
    start = rng.choice([None, round(rng.uniform(0, length), rng.choice([1, 2, 6])), rng.uniform(0, length)])
    end = rng.choice([None, rng.uniform(0, length + 2), length + rng.uniform(0, 3)])
    if start is not None and end is not None and end <= start:
        end = start + rng.choice([0.3, 1.0, rng.uniform(0, 10)])
    return start, end


def random_sampling(rng: random.Random, rule: str, duration: float) -> Sampling:
    fps = random_fps(rng)
    while duration * fps > 60000:  # the reference lists every tick
        fps /= 10
    if rng.random() < 0.2:
        return Sampling(num_frames=rng.choice([1, 2, 8, rng.randint(1, 64)]), frame_rule=rule,
                        precise_time=rng.choice([None, False, True]))
    return Sampling(fps=fps, max_frames=rng.choice([1, 2, 3, 5, 16, 180, 100000]), frame_rule=rule,
                    precise_time=rng.choice([None, False, True]))


CASES_PER_SEED = 60
SEEDS = range(20)


@pytest.fixture(params=["bulk", "tick_by_tick"])
def stepping(request, monkeypatch):
    """bulk: as shipped; tick_by_tick: no stretch passed in one step (every tick simulated, exactly)."""
    if request.param == "tick_by_tick":
        monkeypatch.setattr(ffmpeg_rule, "_one_copy_each", lambda *args: False)
    return request.param


@pytest.mark.parametrize("seed", SEEDS)
def test_videollama3_rule_matches_the_former_implementation_on_random_tables(seed, stepping):
    rng = random.Random(seed)
    for case in range(CASES_PER_SEED):
        timeline = random_timeline(rng)
        length = timeline.first_offset + timeline.end
        start, end = random_window(rng, length)
        sampling = random_sampling(rng, "videollama3", length + 3)
        expected = reference_fps_filter(timeline, sampling, start, end)
        picks = _fps_filter(timeline, sampling, start, end)
        assert (picks.frames, picks.stamps) == expected, (seed, case, timeline, sampling, start, end)


@pytest.mark.parametrize("seed", SEEDS)
def test_ffmpeg_output_runs_expand_to_the_former_frame_list(seed, stepping):
    """Before thinning: every frame FFmpeg writes, in order."""
    rng = random.Random(1000 + seed)
    for case in range(CASES_PER_SEED):
        timeline = random_timeline(rng)
        length = timeline.file_duration or timeline.first_offset + timeline.end
        start, end = random_window(rng, length)
        cmd = command(timeline.stream_start, length, start, end, rng.random() < 0.5)
        fps = rng.choice([None, random_fps(rng)])
        while fps is not None and (length + 3) * fps > 60000:
            fps /= 10
        args = (timeline.times, timeline.end, timeline.first_offset, timeline.nominal_rate or timeline.rate, cmd,
                fps, timeline.single_stream, timeline.durations, timeline.ts_discont)
        runs = ffmpeg_runs(*args)
        assert runs.expand() == reference_ffmpeg_frames(*args), (seed, case, args)
        assert (runs.counts > 0).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_on_screen_rule_matches_the_former_implementation_on_random_tables(seed):
    rng = random.Random(2000 + seed)
    for case in range(CASES_PER_SEED):
        timeline = random_timeline(rng)
        start, end = random_window(rng, timeline.end)
        sampling = random_sampling(rng, "on_screen", timeline.end + 3)
        expected = reference_on_screen(timeline, sampling, start, end)
        picks = _on_screen(timeline, sampling, start, end)
        assert (picks.frames, picks.stamps) == expected, (seed, case, timeline, sampling, start, end)


def near_threshold_origins() -> list[tuple[float, float]]:
    """(seek, fps) of output cuts whose positions sit on or within float error of FFmpeg's thresholds.

    A tick at position y after the cut is written twice when the output lags half a tick:
    round(y, 9) + 2^-17 >= 0.5, i.e. y >= 0.4999923705; the first tick is round(seek x fps).
    """
    fractions = [0.5000076295 + d for d in (-1e-12, -1e-13, -1e-14, 0.0, 1e-14, 1e-13, 1e-12, 5e-10, -5e-10)]
    fractions += [0.5, 0.5 - 1e-9, 0.5 - 2e-9, 0.5 + 2**-17, 0.5 - 2**-17, 0.4999923705, 0.25]
    pairs = []
    for seek in (1.0, 2.5, 7.123457, 10.999999):  # whole microseconds, as FFmpeg reads them
        for whole in (0, 3, 41, 977):
            for fraction in fractions:
                pairs.append((seek, (whole + fraction) / seek))
    return pairs


@pytest.mark.parametrize("precise", [True, False])
def test_positions_at_ffmpegs_rounding_thresholds_match_the_former_implementation(precise, stepping):
    """Output cuts whose start x fps puts the ticks where FFmpeg writes one twice, or just does not."""
    times, end = (np.arange(300) / 25).tolist(), 12.0
    for seek, fps in near_threshold_origins():
        for length in (0.6, 30.0):
            cmd = Command(seek, length, True, precise)
            args = (times, end, 0.0, 25.0, cmd, fps)
            assert ffmpeg_runs(*args).expand() == reference_ffmpeg_frames(*args), (seek, fps, length)


# Found by search: the output clock sits within float error of the threshold, and the tick where the
# position crosses a power of two (2^8, 2^15 ticks after the cut) is written twice.
DOUBLED_MID_STREAM = [(1.0, 3.5000076295000007), (2.5, 391.00000305180004), (7.123457, 369.8344789095379),
                      (2.5, 728.6000030518001), (4.867529, 571.02895691623)]


@pytest.mark.parametrize("seek, fps", DOUBLED_MID_STREAM)
def test_a_tick_written_twice_mid_stream_is_written_twice(seek, fps, stepping):
    times, end = (np.arange(2500) / 25).tolist(), 100.0
    cmd = Command(seek, 100.0 - seek, True, True)
    args = (times, end, 0.0, 25.0, cmd, fps)
    expected = reference_ffmpeg_frames(*args)
    begin = _round_near(seek * fps)
    assert len(expected) == math.floor(end * fps + _EPS) - begin + 1  # one tick came out twice
    first = np.round(np.float64(begin) - seek * fps, 9)
    assert first + 2**-17 + 1 < 1.5  # not the first (that one only sets the clock)
    assert ffmpeg_runs(*args).expand() == expected


def test_bulk_steps_agree_with_tick_by_tick_far_into_a_long_video(monkeypatch):
    """Ticks around 10^10 (a window deep into a long video at a high fps), where positions carry more float
    error: passing stretches in one step must still agree with simulating each tick."""
    rng = random.Random(11)
    for _ in range(40):
        at = rng.uniform(1e4, 5e5)
        times = [0.0] + (at + np.arange(50) / 25).tolist()  # a long freeze, then 2 s of frames
        fps = rng.choice([1e3, 1e4, 3e4, rng.uniform(100, 3e4)])
        seek = rng.choice([at + 0.5, at + rng.uniform(0, 1), at + (0.5 + 2**-17) / fps])
        cmd = Command(seek, rng.uniform(0.1, 1.5), True, True)
        args = (times, at + 2.0, 0.0, 25.0, cmd, fps)
        bulk = ffmpeg_runs(*args)
        with monkeypatch.context() as patched:
            patched.setattr(ffmpeg_rule, "_one_copy_each", lambda *a: False)
            exact = ffmpeg_runs(*args)
        assert bulk.expand() == exact.expand()


def test_numpy_arange_and_linspace_at_positions_are_numpys():
    rng = random.Random(3)
    for _ in range(3000):
        start = rng.choice([0.0, 0, 2, rng.uniform(0, 5000), rng.uniform(0, 1), rng.uniform(0, 1e-3)])
        step = 1 / random_fps(rng)
        stop = start + rng.choice([rng.uniform(0, 3000) * step, rng.uniform(0, 50), -1.0, 0.0, step])
        full = np.arange(start, stop, step)
        assert arange_length(start, stop, step) == len(full)
        if len(full):
            positions = np.asarray(sorted({0, 1, len(full) - 1, *(rng.randrange(len(full)) for _ in range(5))}))
            positions = positions[positions < len(full)]
            assert arange_at(start, step, positions).tolist() == full[positions].tolist()
        num = rng.choice([1, 2, 3, rng.randint(1, 5000)])
        full = np.linspace(start, stop, num)
        positions = np.asarray(sorted({0, num - 1, *(rng.randrange(num) for _ in range(5))}))
        assert linspace_at(start, stop, num, positions).tolist() == full[positions].tolist()


# --------------------------------------------------------------------------- memory at absurd rates


def constant_rate_table(seconds: float, rate: float = 30.0) -> Timeline:
    count = int(seconds * rate)
    return Timeline((np.arange(count) / rate).tolist(), count / rate, file_duration=count / rate, rate=rate)


@pytest.mark.parametrize("seconds", [40.0, 3600.0])
@pytest.mark.parametrize("fps", [1e6, 1e8])
@pytest.mark.parametrize("rule, precise, window", [
    ("videollama3", False, None), ("videollama3", False, (5.25, 30.5)), ("videollama3", True, (5.25, 30.5)),
    ("on_screen", None, None), ("on_screen", None, (5.25, 30.5)),
])
def test_absurd_fps_picks_its_frames_with_little_memory(seconds, fps, rule, precise, window):
    timeline = constant_rate_table(seconds)
    sampling = Sampling(fps=fps, max_frames=10, frame_rule=rule, precise_time=precise)
    start, end = window or (None, None)
    tracemalloc.start()
    try:
        picks = pick_frames(timeline, sampling, start, end)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"{peak / 2**20:.1f} MiB"
    count = len(timeline.times)
    first, last = (0, count - 1) if window is None else (int(start * 30) + (rule == "on_screen"), int(end * 30) - 1)
    # every source frame is on screen for many ticks: ten frames spread evenly from the first to the last
    assert len(picks.frames) == 10 and picks.frames == sorted(picks.frames)
    assert abs(picks.frames[0] - first) <= 1 and abs(picks.frames[-1] - last) <= 1
    spread = np.diff(picks.frames)
    assert spread.max() - spread.min() <= 2
