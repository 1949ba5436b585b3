"""Decoding videos, frame folders and images: true timestamps, the right pixels, clear errors."""

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from vidlab.errors import (
    ClipWindowError,
    MediaNotFoundError,
    NoFramesError,
    NoVideoStreamError,
    UnreadableMediaError,
)
from vidlab.media import Sampling, load_image, load_video
from vidlab.media.writer import write_video

LEVEL_STEP = 6


def numbered_frames(count: int, size: int = 64) -> list[np.ndarray]:
    """Frame i is a flat grey of level i * LEVEL_STEP, so a decoded frame tells its own index."""
    return [np.full((size, size, 3), i * LEVEL_STEP, np.uint8) for i in range(count)]


def decoded_index(frame: np.ndarray) -> int:
    return int(round(frame.mean() / LEVEL_STEP))


ON_SCREEN = {"frame_rule": "on_screen"}


def test_constant_rate_video_has_true_timestamps_and_the_right_frames(tmp_path):
    path = write_video(tmp_path / "cfr.mp4", numbered_frames(30), fps=10)
    clip = load_video(path, Sampling(fps=1))
    # VideoLLaMA3's rule: at each tick the last frame before the next one (0.9, 1.9, 2.9 s), stamped 0, 1, 2.
    assert [decoded_index(f) for f in clip.frames] == clip.frame_indices == [9, 19, 29]
    assert clip.timestamps == pytest.approx([0.9, 1.9, 2.9]) and clip.stamps == [0.0, 1.0, 2.0]
    assert clip.frames.shape == (3, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.source_fps == pytest.approx(10)
    assert clip.duration == pytest.approx(3.0)
    on_screen = load_video(path, Sampling(fps=1, **ON_SCREEN))  # vidlab 0.1's frames, as before
    assert [decoded_index(f) for f in on_screen.frames] == on_screen.frame_indices == [0, 10, 20]
    assert on_screen.timestamps == pytest.approx([0.0, 1.0, 2.0]) == on_screen.stamps


def test_variable_rate_video_uses_presentation_times(tmp_path):
    times = [0.0, 0.1, 0.4, 0.7, 1.7, 2.0, 2.2, 3.3]
    path = write_video(tmp_path / "vfr.mp4", numbered_frames(len(times)), fps=10, times=times)
    clip = load_video(path, Sampling(fps=1))
    # The last frame before 1, 2, 3, 4 s (the video ends at 3.4 s: 3 ticks): 3 (0.7), 4 (1.7), 6 (2.2).
    assert [decoded_index(f) for f in clip.frames] == clip.frame_indices == [3, 4, 6]
    assert clip.timestamps == pytest.approx([0.7, 1.7, 2.2])
    on_screen = load_video(path, Sampling(fps=1, **ON_SCREEN))
    # On screen at 0 s, 1 s, 2 s, 3 s: frames 0 (0.0), 3 (0.7), 5 (2.0), 6 (2.2).
    assert [decoded_index(f) for f in on_screen.frames] == on_screen.frame_indices == [0, 3, 5, 6]
    assert on_screen.timestamps == pytest.approx([0.0, 0.7, 2.0, 2.2])


def test_stream_that_does_not_start_at_zero(tmp_path):
    times = [5.0 + i / 10 for i in range(20)]
    path = write_video(tmp_path / "offset.mp4", numbered_frames(20), fps=10, times=times)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.start_time * stream.time_base >= 5  # the file really starts late
    clip = load_video(path, Sampling(fps=2))
    assert [decoded_index(f) for f in clip.frames] == [4, 9, 14, 19]
    assert clip.timestamps == pytest.approx([0.4, 0.9, 1.4, 1.9])  # true times from the first frame
    assert clip.stamps == pytest.approx([5.0, 5.5, 6.0, 6.5])  # the original announces times from its start time
    on_screen = load_video(path, Sampling(fps=2, **ON_SCREEN))
    assert [decoded_index(f) for f in on_screen.frames] == [0, 5, 10, 15]
    assert on_screen.stamps == pytest.approx([0.0, 0.5, 1.0, 1.5])


def test_clip_with_start_and_end(tmp_path):
    path = write_video(tmp_path / "long.mp4", numbered_frames(40), fps=10)
    clip = load_video(path, Sampling(fps=1), start=1.5, end=3.7)
    # 2.2 s from 1.5 s: ticks at 1.5 and 2.5 show the last frames before 2.5 and 3.5 s.
    assert [decoded_index(f) for f in clip.frames] == [24, 34]
    assert clip.stamps == [1.5, 2.5]  # times in the video, as the original announces them
    assert (clip.start, clip.end) == (1.5, 3.7)
    on_screen = load_video(path, Sampling(fps=1, **ON_SCREEN), start=1.5, end=3.2)
    assert on_screen.timestamps == pytest.approx([1.5, 2.5])  # true times in the video
    assert on_screen.stamps == pytest.approx([0.0, 1.0])  # from the clip start
    assert [decoded_index(f) for f in on_screen.frames] == [15, 25]


def test_end_past_the_video_is_clamped(tmp_path):
    path = write_video(tmp_path / "short.mp4", numbered_frames(20), fps=10)
    clip = load_video(path, Sampling(fps=1, **ON_SCREEN), start=1.0, end=60.0)
    assert clip.timestamps == pytest.approx([1.0])
    assert clip.end == pytest.approx(2.0)
    assert [decoded_index(f) for f in load_video(path, Sampling(fps=1), start=1.0, end=60.0).frames] == [19]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm", ".avi", ".mov", ".gif"])
def test_every_container_decodes(tmp_path, suffix):
    path = write_video(tmp_path / f"v{suffix}", numbered_frames(30), fps=10)
    on_screen = load_video(path, Sampling(fps=2, **ON_SCREEN))
    assert on_screen.timestamps == pytest.approx([i / 2 for i in range(6)])
    assert [decoded_index(f) for f in on_screen.frames] == [0, 5, 10, 15, 20, 25]
    clip = load_video(path, Sampling(fps=2))
    if suffix == ".gif":  # the original reads GIFs by index at an assumed 25 fps: runs of 12 frames, middles 6, 18
        assert [decoded_index(f) for f in clip.frames] == [6, 18] and clip.stamps == pytest.approx([0.24, 0.72])
    else:
        assert [decoded_index(f) for f in clip.frames] == [4, 9, 14, 19, 24, 29]


def test_num_frames_on_a_real_video(tmp_path):
    path = write_video(tmp_path / "v.mp4", numbered_frames(40), fps=10)
    for rule in ("videollama3", "on_screen"):
        clip = load_video(path, Sampling(num_frames=5, frame_rule=rule))
        assert clip.frame_indices == [0, 9, 19, 29, 39]
        assert [decoded_index(f) for f in clip.frames] == [0, 9, 19, 29, 39]


def test_frame_folder_sorted_naturally_at_the_given_rate(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(numbered_frames(12)):
        Image.fromarray(frame).save(folder / f"frame_{i}.png")  # frame_10 must come after frame_9
    (folder / "notes.txt").write_text("not a frame")
    on_screen = load_video(folder, Sampling(fps=1, folder_fps=4, **ON_SCREEN))
    assert on_screen.timestamps == pytest.approx([0.0, 1.0, 2.0])
    assert [decoded_index(f) for f in on_screen.frames] == [0, 4, 8]
    assert on_screen.duration == pytest.approx(3.0)
    clip = load_video(folder, Sampling(fps=1, folder_fps=4))  # the original: middle of each run of 4
    assert [decoded_index(f) for f in clip.frames] == [2, 6, 10] and clip.stamps == [0.5, 1.5, 2.5]


def test_image_is_rgb_and_upright(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    Image.new("L", (40, 20), 128).save(path, exif=exif)
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.size == (20, 40)


# --- errors: each names the path and the reason -------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(MediaNotFoundError, match="no such file") as err:
        load_video(path)
    assert str(path) in str(err.value)


def test_file_that_is_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is text, not a video")
    with pytest.raises(UnreadableMediaError, match="not a readable video") as err:
        load_video(path)
    assert str(path) in str(err.value)


def test_file_without_a_video_stream(tmp_path):
    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(NoVideoStreamError, match="no video stream.*audio") as err:
        load_video(path)
    assert str(path) in str(err.value)


def test_video_with_no_decodable_frame(tmp_path):
    path = tmp_path / "corrupt.mkv"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(5):  # packets of random bytes: a stream the decoder cannot use
            packet = av.Packet(rng.integers(0, 255, 500, dtype=np.uint8).tobytes())
            packet.pts = packet.dts = i * 100
            packet.time_base = Fraction(1, 1000)
            packet.stream = stream
            container.mux(packet)
    with pytest.raises(NoFramesError, match="no frame could be decoded") as err:
        load_video(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "window, reason",
    [
        ({"start": 9.0}, "at or after the end"),
        ({"start": -1.0}, "negative"),
        ({"start": 5.0, "end": 8.0}, "at or after"),
        ({"start": 2.0, "end": 1.0}, "not after start"),
        ({"start": float("nan")}, "finite"),
        ({"end": float("inf")}, "finite"),
    ],
)
def test_clip_window_outside_the_video(tmp_path, window, reason):
    path = write_video(tmp_path / "v.mp4", numbered_frames(30), fps=10)  # 3 s
    with pytest.raises(ClipWindowError, match=reason) as err:
        load_video(path, Sampling(), **window)
    assert str(path) in str(err.value) and "0-3.00s" in str(err.value)


def test_empty_frame_folder(tmp_path):
    with pytest.raises(NoFramesError, match="no frame images") as err:
        load_video(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_unreadable_image(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG not really")
    with pytest.raises(UnreadableMediaError, match="not a readable image") as err:
        load_image(path)
    assert str(path) in str(err.value)


def _frames_in_child(path, pipe):
    pipe.send(len(load_video(path).frames))


def test_a_process_forked_after_decoding_decodes_too(tmp_path):
    """The data check and DataLoader workers are forked from a process that has decoded already: a scaler
    thread pool kept across that fork (PyAV 18.1.1's default) hangs the child on its first frame."""
    import multiprocessing

    path = write_video(tmp_path / "v.mp4", numbered_frames(12), fps=4)
    expected = len(load_video(path).frames)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_frames_in_child, args=(path, send))
    child.start()
    try:
        assert receive.poll(60), "the forked process hung decoding"
        assert receive.recv() == expected
    finally:
        child.kill()
        child.join(10)
