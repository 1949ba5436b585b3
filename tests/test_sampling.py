"""Frame selection rules (pure arithmetic on frame times)."""

import pytest

from vidlab.media.sampling import evenly_spaced, select_frames
from vidlab.settings import Sampling


def constant_rate(seconds: float, rate: float) -> tuple[list[float], float]:
    count = int(round(seconds * rate))
    return [i / rate for i in range(count)], count / rate


def test_one_frame_per_second_on_a_short_video():
    times, end = constant_rate(3, 30)
    assert select_frames(times, end, Sampling(fps=1)) == [0, 30, 60]


def test_a_tick_at_the_rounded_end_of_the_video_is_not_a_frame():
    times, _ = constant_rate(10, 30)
    assert len(select_frames(times, 10.0004, Sampling(fps=1))) == 10  # end stored as 10.0004 s


def test_two_frames_per_second():
    times, end = constant_rate(10, 30)
    chosen = select_frames(times, end, Sampling(fps=2))
    assert len(chosen) == 20
    assert [times[i] for i in chosen[:3]] == [0.0, 0.5, 1.0]


def test_long_video_is_thinned_to_max_frames_evenly():
    times, end = constant_rate(600, 30)  # 10 minutes: 600 ticks at 1 fps
    chosen = select_frames(times, end, Sampling(fps=1, max_frames=180))
    assert len(chosen) == 180
    assert chosen[0] == 0 and chosen[-1] == 599 * 30  # first and last tick kept
    gaps = {b - a for a, b in zip(chosen, chosen[1:])}
    assert max(gaps) - min(gaps) <= 30  # even spacing, up to one tick of rounding


def test_min_frames_spreads_frames_over_a_short_video():
    times, end = constant_rate(2, 30)  # 1 fps would give only 2 frames
    chosen = select_frames(times, end, Sampling(fps=1, min_frames=8))
    assert len(chosen) == 8
    assert chosen[0] == 0 and chosen[-1] == 59


def test_num_frames_takes_exactly_that_many_evenly():
    times, end = constant_rate(600, 30)
    chosen = select_frames(times, end, Sampling(num_frames=16))
    assert len(chosen) == 16
    assert chosen[0] == 0 and chosen[-1] == len(times) - 1
    times, end = constant_rate(1, 5)  # only 5 frames exist
    assert select_frames(times, end, Sampling(num_frames=16)) == [0, 1, 2, 3, 4]


def test_sampling_faster_than_the_source_never_repeats_a_frame():
    times, end = constant_rate(5, 1)  # a 1 fps source
    assert select_frames(times, end, Sampling(fps=4)) == [0, 1, 2, 3, 4]


def test_variable_rate_takes_the_frame_on_screen_at_each_tick():
    times = [0.0, 0.1, 0.5, 0.55, 1.7, 2.0, 2.05, 3.3]
    assert select_frames(times, 3.4, Sampling(fps=1)) == [0, 3, 5, 6]


def test_clip_window_limits_the_frames():
    times, end = constant_rate(10, 10)
    chosen = select_frames(times, end, Sampling(fps=1), start=2.5, end=5.0)
    assert [times[i] for i in chosen] == [2.5, 3.5, 4.5]
    chosen = select_frames(times, end, Sampling(num_frames=3), start=2.0, end=4.0)
    assert [times[i] for i in chosen] == [2.0, 2.9, 3.9]


def test_evenly_spaced_includes_both_ends():
    assert evenly_spaced(10, 4) == [0, 3, 6, 9]
    assert evenly_spaced(3, 5) == [0, 1, 2]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fps": 0}, "fps\n  Input should be greater than 0"),
        ({"fps": float("inf")}, "fps\n  Input should be a finite number"),
        ({"fps": float("nan")}, "fps\n  Input should be a finite number"),
        ({"folder_fps": float("inf")}, "folder_fps\n  Input should be a finite number"),
        ({"max_frames": 0}, "max_frames\n  Input should be greater than or equal to 1"),
        ({"min_frames": 10, "max_frames": 5}, "min_frames \\(10\\) is above max_frames \\(5\\)"),
        ({"num_frames": 0}, "num_frames\n  Input should be greater than or equal to 1"),
        ({"start": 3}, "start\n  Extra inputs are not permitted"),
    ],
)
def test_bad_sampling_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Sampling(**kwargs)
