"""Frame selection rules (pure arithmetic on frame times).

The "videollama3" rule's expected frames are derived by hand from the original loader's code:
FFmpeg's fps filter with round=down shows, at tick n, the last frame with floor(t * fps) <= n,
for floor(end * fps) ticks; stamps start + n / fps; more than max_frames thinned by
np.linspace(0, n - 1, max_frames, dtype=int). tests/test_frame_rule_ffmpeg.py checks the same
rule against FFmpeg itself where it is installed.
"""

import pytest

from vidlab.media.sampling import Timeline, evenly_spaced, pick_frames, select_frames
from vidlab.settings import Sampling

ON_SCREEN = {"frame_rule": "on_screen"}


def constant_rate(seconds: float, rate: float) -> tuple[list[float], float]:
    count = int(round(seconds * rate))
    return [i / rate for i in range(count)], count / rate


# --------------------------------------------------------------------------- the original VideoLLaMA3 rule


def test_each_tick_shows_the_last_frame_before_the_next_tick():
    times, end = constant_rate(4, 10)  # 40 frames, 0.0 .. 3.9 s
    picks = pick_frames(Timeline(times, end), Sampling(fps=1))
    assert picks.frames == [9, 19, 29, 39]  # shown at 0.9, 1.9, 2.9, 3.9 s: the frames before 1, 2, 3, 4 s
    assert picks.stamps == [0.0, 1.0, 2.0, 3.0]
    assert pick_frames(Timeline(times, end), Sampling(fps=2)).frames == [4, 9, 14, 19, 24, 29, 34, 39]


def test_a_frame_exactly_on_a_tick_belongs_to_that_tick():
    times, end = constant_rate(3, 1)  # one frame a second, at 0, 1, 2
    assert pick_frames(Timeline(times, end), Sampling(fps=1)).frames == [0, 1, 2]


def test_ticks_are_floor_of_the_length_times_fps():
    times, end = constant_rate(5.3, 30)  # 159 frames, ending at 5.3 s: 5 ticks, not 6
    picks = pick_frames(Timeline(times, end), Sampling(fps=1))
    assert picks.frames == [29, 59, 89, 119, 149] and picks.stamps == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_frame_held_across_a_freeze_is_shown_at_each_of_its_ticks():
    times = [0.0, 0.3, 1.3, 2.4, 2.6, 5.5, 5.6, 5.7, 8.9]
    picks = pick_frames(Timeline(times, 9.0), Sampling(fps=1))
    #   tick:          0  1  2  3  4  5  6  7  8     (last frame before tick + 1 s)
    assert picks.frames == [1, 2, 4, 4, 4, 7, 7, 7, 8]
    assert picks.stamps == [float(n) for n in range(9)]


def test_long_video_keeps_linspace_of_its_ticks():
    times, end = constant_rate(600, 30)  # 10 minutes: 600 ticks at 1 fps
    picks = pick_frames(Timeline(times, end), Sampling(fps=1, max_frames=180))
    kept = [int(i) for i in __import__("numpy").linspace(0, 599, 180, dtype=int)]
    assert picks.frames == [30 * n + 29 for n in kept]
    assert picks.stamps == [float(n) for n in kept]


def test_clip_stamps_are_times_in_the_video():
    times, end = constant_rate(10, 10)
    timeline = Timeline(times, end, file_duration=10.0)
    # -ss 2.5 -t 2.5: frames 2.5 .. 4.9 s, ticks at 2.5 + n: the last frame before 3.5 and before 4.5
    picks = pick_frames(timeline, Sampling(fps=1), start=2.5, end=5.0)
    assert picks.frames == [34, 44] and picks.stamps == [2.5, 3.5]
    # a clip that runs to the end: 7.5 s long, frames up to 9.9 s, ticks at 2.5 .. 9.5
    assert pick_frames(timeline, Sampling(fps=1), start=2.5).frames == [34, 44, 54, 64, 74, 84, 94]


def test_stream_starting_late_is_stamped_from_its_start_time():
    times, end = constant_rate(3, 10)
    timeline = Timeline(times, end, first_offset=0.0, stream_start=1.0, file_duration=3.0)
    picks = pick_frames(timeline, Sampling(fps=1))
    assert picks.frames == [9, 19, 29] and picks.stamps == [1.0, 2.0, 3.0]


def test_frame_folders_and_short_clips_go_by_frame_index_as_the_original_does():
    # A folder of 12 frames at 3 a second: the middle frame of each run of 3, stamped index / 3.
    folder = Timeline([i / 3 for i in range(12)], 4.0, rate=3.0, index_rate=3.0)
    picks = pick_frames(folder, Sampling(fps=1))
    assert picks.frames == [1, 4, 7, 10] and picks.stamps == pytest.approx([1 / 3, 4 / 3, 7 / 3, 10 / 3])
    # A clip under a second (1.0 to 1.8 s of a 10 fps video): frames int(1.0 * 10) - 1 = 9 to
    # int(1.8 * 10) - 1 = 17; one run of 9 frames, its middle frame 9 + 4 = 13.
    times, end = constant_rate(4, 10)
    picks = pick_frames(Timeline(times, end, rate=10.0), Sampling(fps=1), start=1.0, end=1.8)
    assert picks.frames == [13] and picks.stamps == [1.3]


def test_num_frames_takes_linspace_of_all_frames_stamped_over_the_length():
    times, end = constant_rate(4, 10)
    picks = pick_frames(Timeline(times, end, file_duration=4.0, rate=10.0), Sampling(num_frames=4))
    assert picks.frames == [0, 13, 26, 39]
    assert picks.stamps == pytest.approx([0.0, 4 * 13 / 39, 4 * 26 / 39, 4.0])  # linspace(0, 4, 40) at those


def test_num_frames_on_a_variable_rate_video_resamples_it_at_its_nominal_rate_first():
    # FFmpeg's constant-rate output: a frame held 2 s at a nominal 10 fps is shown 20 times
    times = [0.0, 0.1, 0.2, 2.2, 2.3]
    picks = pick_frames(Timeline(times, 2.4, file_duration=2.4, rate=10.0, nominal_rate=10.0,
                                 durations=[0.1, 0.1, 2.0, 0.1, 0.1], single_stream=True), Sampling(num_frames=5))
    assert picks.frames == [0, 2, 2, 2, 4]


def test_keyframes_replace_each_pick_by_the_nearest_keyframe():
    times, end = constant_rate(10, 10)
    keyframe = [i % 25 == 0 for i in range(100)]  # keyframes at 0, 2.5, 5, 7.5 s
    picks = pick_frames(Timeline(times, end, keyframe=keyframe), Sampling(fps=1, keyframes=True))
    assert picks.frames == [0, 25, 50, 75] and picks.stamps == [0.0, 2.5, 5.0, 7.5]


# --------------------------------------------------------------------------- the on_screen rule (vidlab 0.1's)


def test_one_frame_per_second_on_a_short_video():
    times, end = constant_rate(3, 30)
    assert select_frames(times, end, Sampling(fps=1, **ON_SCREEN)) == [0, 30, 60]


def test_a_tick_at_the_rounded_end_of_the_video_is_not_a_frame():
    times, _ = constant_rate(10, 30)
    assert len(select_frames(times, 10.0004, Sampling(fps=1, **ON_SCREEN))) == 10  # end stored as 10.0004 s


def test_two_frames_per_second():
    times, end = constant_rate(10, 30)
    chosen = select_frames(times, end, Sampling(fps=2, **ON_SCREEN))
    assert len(chosen) == 20
    assert [times[i] for i in chosen[:3]] == [0.0, 0.5, 1.0]


def test_long_video_is_thinned_to_max_frames_evenly():
    times, end = constant_rate(600, 30)  # 10 minutes: 600 ticks at 1 fps
    chosen = select_frames(times, end, Sampling(fps=1, max_frames=180, **ON_SCREEN))
    assert len(chosen) == 180
    assert chosen[0] == 0 and chosen[-1] == 599 * 30  # first and last tick kept
    gaps = {b - a for a, b in zip(chosen, chosen[1:])}
    assert max(gaps) - min(gaps) <= 30  # even spacing, up to one tick of rounding


def test_min_frames_spreads_frames_over_a_short_video():
    times, end = constant_rate(2, 30)  # 1 fps would give only 2 frames
    for rule in ("on_screen", "videollama3"):
        chosen = select_frames(times, end, Sampling(fps=1, min_frames=8, frame_rule=rule))
        assert len(chosen) == 8
        assert chosen[0] == 0 and chosen[-1] == 59


def test_num_frames_takes_exactly_that_many_evenly():
    times, end = constant_rate(600, 30)
    chosen = select_frames(times, end, Sampling(num_frames=16, **ON_SCREEN))
    assert len(chosen) == 16
    assert chosen[0] == 0 and chosen[-1] == len(times) - 1
    times, end = constant_rate(1, 5)  # only 5 frames exist
    assert select_frames(times, end, Sampling(num_frames=16, **ON_SCREEN)) == [0, 1, 2, 3, 4]


def test_sampling_faster_than_the_source_never_repeats_a_frame():
    times, end = constant_rate(5, 1)  # a 1 fps source
    assert select_frames(times, end, Sampling(fps=4, **ON_SCREEN)) == [0, 1, 2, 3, 4]


def test_variable_rate_takes_the_frame_on_screen_at_each_tick():
    times = [0.0, 0.1, 0.5, 0.55, 1.7, 2.0, 2.05, 3.3]
    assert select_frames(times, 3.4, Sampling(fps=1, **ON_SCREEN)) == [0, 3, 5, 6]


def test_clip_window_limits_the_frames():
    times, end = constant_rate(10, 10)
    chosen = select_frames(times, end, Sampling(fps=1, **ON_SCREEN), start=2.5, end=5.0)
    assert [times[i] for i in chosen] == [2.5, 3.5, 4.5]
    picks = pick_frames(Timeline(times, end), Sampling(num_frames=3, **ON_SCREEN), start=2.0, end=4.0)
    assert [times[i] for i in picks.frames] == [2.0, 2.9, 3.9]
    assert picks.stamps == pytest.approx([0.0, 0.9, 1.9])  # on_screen stamps count from the clip start


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
        ({"frame_rule": "nearest"}, "frame_rule\n  Input should be 'videollama3', 'on_screen', 'uniform' or 'stride'"),
        ({"start": 3}, "start\n  Extra inputs are not permitted"),
    ],
)
def test_bad_sampling_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Sampling(**kwargs)
