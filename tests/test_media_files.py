"""Real-world video files: seeking gives the frames a full decode gives, phone rotation, damaged
packets, downloads cut short, frames scaled while decoding, and keyframe mode."""

from pathlib import Path

import av
import numpy as np
import pytest
from conftest import DECODERS, coded, index_of

from vidlab.errors import TruncatedVideoError
from vidlab.media import load_video
from vidlab.media.decode import decode_frames
from vidlab.media.table import read_frame_table
from vidlab.media.writer import write_video
from vidlab.settings import Sampling


def full_decode(path: Path) -> dict[int, int]:
    """pts -> frame index, decoding every frame from the start (the reference)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {frame.pts: index_of(frame.to_ndarray(format="rgb24")) for frame in container.decode(stream)}


FILES = {
    "b-frames.mp4": {"count": 240, "fps": 24},  # x264 veryfast: B-frames and an edit list
    "no-b-frames.mp4": {"count": 240, "fps": 24, "encoder_options": {"preset": "ultrafast", "g": "30"}},
    "short-gop.mp4": {"count": 240, "fps": 24, "encoder_options": {"g": "12"}},
    "variable-rate.mp4": {"times": [round(0.013 * i * i, 3) for i in range(120)]},
    "late-start.mp4": {"times": [3.0 + i / 12 for i in range(120)]},
    "matroska.mkv": {"count": 240, "fps": 24, "encoder_options": {"g": "40"}},
    "webm.webm": {"count": 120, "fps": 24},
}


def write_file(folder: Path, name: str) -> tuple[Path, int]:
    """The file FILES[name] describes, written into `folder`, and its number of frames."""
    spec = dict(FILES[name])
    times = spec.pop("times", None)
    count = len(times) if times else spec.pop("count")
    path = write_video(folder / name, [coded(i) for i in range(count)], fps=spec.pop("fps", 10), times=times, **spec)
    return path, count


@pytest.mark.parametrize("name", list(FILES))
def test_seeking_decodes_the_frames_a_full_decode_gives(tmp_path, name):
    path, count = write_file(tmp_path, name)
    table = read_frame_table(path)
    truth = full_decode(path)
    assert len(table) == count and sorted(truth) == table.pts.tolist()
    rng = np.random.default_rng(0)
    for _ in range(4):
        wanted = sorted(rng.choice(count, size=9, replace=False).tolist())
        decoded = decode_frames(path, table, wanted)
        assert {i: index_of(f) for i, f in decoded.frames.items()} == {i: truth[int(table.pts[i])] for i in wanted}
    if table.keyframe.sum() > 2:  # far-apart picks seek instead of decoding everything in between
        decoded = decode_frames(path, table, [0, count // 2, count - 1])
        assert decoded.decoded < count and decoded.seeks >= 2


@pytest.mark.parametrize("rotation, turns", [(90, 1), (180, 2), (270, 3)])
def test_phone_videos_come_out_upright(tmp_path, rotation, turns):
    stored = [coded(i, 48, 80) for i in range(20)]
    path = write_video(tmp_path / "phone.mp4", stored, fps=10, rotation=rotation)
    clip = load_video(path, Sampling(fps=1, frame_rule="on_screen"))
    expected = np.rot90(stored[0], turns)  # what players show: FFmpeg's autorotation
    assert clip.frames.shape[1:3] == expected.shape[:2]  # portrait for 90 and 270
    assert np.abs(clip.frames[0].astype(int) - expected).mean() < 8


def test_a_damaged_packet_costs_its_frame_not_the_rest_of_the_video(tmp_path):
    # No B-frames, one keyframe (at 0): decode order is frame order, and every frame needs the one before.
    path = write_video(tmp_path / "clip.mp4", [coded(i) for i in range(100)], fps=10,
                       encoder_options={"preset": "ultrafast"})
    with av.open(str(path)) as container:
        damaged = list(container.streams.video[0].index_entries)[49]  # frame 49: shown at tick 4 (fps 1)
    data = bytearray(path.read_bytes())
    data[damaged.pos : damaged.pos + 4] = b"\xff\xff\xff\xff"  # its NAL length: the decoder rejects the packet
    broken = tmp_path / "damaged.mp4"
    broken.write_bytes(bytes(data))

    clip = load_video(broken, Sampling(fps=1))
    assert len(clip) == 9  # 10 ticks, one lost; before vidlab 0.2 decoding stopped at 4.5 s
    assert clip.stamps[-1] == 9.0 and 4.0 not in clip.stamps
    assert len(clip.warnings) == 1 and "1 of 10 sampled frames could not be decoded" in clip.warnings[0]
    assert str(broken) in clip.warnings[0]


def test_a_download_cut_short_is_refused_or_used_with_a_warning(tmp_path):
    path = write_video(tmp_path / "whole.mp4", [coded(i) for i in range(100)], fps=10, faststart=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    with pytest.raises(TruncatedVideoError, match=r"cut\.mp4: the video's frames end at \d\.\ds but its header says "
                       r"10\.0s.*allow partial"):
        load_video(cut, Sampling(fps=1))
    clip = load_video(cut, Sampling(fps=1, allow_partial=True))
    assert 1 <= len(clip) < 9 and clip.duration < 9
    assert len(clip.warnings) == 1 and "cut short" in clip.warnings[0]
    assert load_video(path, Sampling(fps=1)).warnings == []  # the whole file: no warning


def test_frames_are_scaled_while_decoding_to_the_size_they_will_be_used_at(tmp_path):
    big = [np.full((720, 1280, 3), 40 * i, np.uint8) for i in range(6)]
    path = write_video(tmp_path / "big.mp4", big, fps=2, encoder_options={"preset": "ultrafast"})
    seen = []

    def frame_size(height: int, width: int, frames: int) -> tuple[int, int]:
        seen.append((height, width, frames))
        return 112, 196

    clip = load_video(path, Sampling(fps=1), frame_size=frame_size)
    assert seen == [(720, 1280, 3)] and clip.frames.shape == (3, 112, 196, 3)
    assert abs(int(clip.frames[1].mean()) - int(big[3].mean())) <= 2  # the same picture, smaller
    assert load_video(path, Sampling(fps=1), frame_size=lambda h, w, n: (2000, 4000)).frames.shape[1:3] == (720, 1280)


def test_keyframe_mode_takes_the_nearest_keyframes_with_their_true_times(tmp_path):
    path = write_video(tmp_path / "long.mp4", [coded(i) for i in range(300)], fps=10,
                       encoder_options={"g": "50", "keyint_min": "50", "sc_threshold": "0"})
    table = read_frame_table(path)
    keyframes = np.flatnonzero(table.keyframe).tolist()
    assert keyframes == [0, 50, 100, 150, 200, 250]
    clip = load_video(path, Sampling(fps=0.5, keyframes=True))
    assert [index_of(f) for f in clip.frames] == clip.frame_indices == keyframes
    assert clip.stamps == pytest.approx([0.0, 5.0, 10.0, 15.0, 20.0, 25.0])


def test_a_clip_near_the_end_does_not_decode_from_the_start(tmp_path):
    path = write_video(tmp_path / "v.mp4", [coded(i) for i in range(600)], fps=10,
                       encoder_options={"g": "50", "keyint_min": "50", "sc_threshold": "0"})
    table = read_frame_table(path)
    clip = load_video(path, Sampling(fps=1), start=50.0, end=55.0)
    assert [index_of(f) for f in clip.frames] == [509, 519, 529, 539, 549] and clip.stamps[0] == 50.0
    decoded = decode_frames(path, table, clip.frame_indices)
    assert decoded.decoded <= 60  # from the keyframe at 50 s, not from 0 (before vidlab 0.2: 550 frames)


_PEAK_SCRIPT = """
import sys
import torch
from vidlab.media import load_video
from vidlab.media.torchcodec_decode import torchcodec_missing
from vidlab.settings import Sampling
def status_mb(key):  # VmHWM, unlike ru_maxrss, is this process's own peak (not its parent's, after a fork)
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) / 1024
torchcodec_missing()  # loads torchcodec, once per process, as the first video of any command does
before = status_mb("VmRSS:")
clip = load_video(sys.argv[1], Sampling(fps=2, decoder=sys.argv[2]), frame_size=lambda h, w, frames: (252, 448))
assert clip.decoder == sys.argv[2]
print(clip.frames.shape[0], status_mb("VmHWM:") - before)
"""


@pytest.mark.parametrize("decoder", DECODERS)
def test_peak_memory_stays_far_below_the_frames_at_full_size(tmp_path, decoder):
    import subprocess
    import sys

    rows, columns = np.mgrid[0:1440, 0:2560]
    picture = np.stack([columns % 256, rows % 256, (columns // 3 + rows // 2) % 256], -1).astype(np.uint8)
    path = write_video(tmp_path / "1440p.mp4", (np.roll(picture, 8 * i, 1) for i in range(40)), fps=2,
                       encoder_options={"preset": "ultrafast"})
    # In a fresh process, so the peak is this call's alone.
    result = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path), decoder], capture_output=True, text=True,
                            timeout=300, check=True)
    frames, peak_mb = result.stdout.split()
    full_size_mb = int(frames) * picture.nbytes / 2**20
    assert int(frames) == 40 and full_size_mb > 400
    # Frames scaled while decoding: what remains is the decoder's own buffers (about 40 MB measured with PyAV,
    # 70 with torchcodec; loading torchcodec itself, before the baseline, costs 40-190 MB once per process).
    assert float(peak_mb) < 200, f"{peak_mb} MB above the baseline for {full_size_mb:.0f} MB of full-size frames"


def test_seeks_that_overshoot_twice_lose_no_frame(tmp_path, monkeypatch):
    """A container whose seeks land past the keyframe asked for (as MPEG program streams' byte seeks
    do), twice in a row: the decoder looks again from keyframes further back and finds every frame."""
    from vidlab.media import decode

    path, _ = write_file(tmp_path, "short-gop.mp4")
    table = read_frame_table(path)
    keys = [int(p) for p in table.pts[table.keyframe]]
    asked: list[int | None] = []
    real_seek = decode._Reader.seek

    def overshooting(self, pts):
        asked.append(pts)
        later = [k for k in keys if pts is not None and k > pts]
        # each of the first two seeks to a keyframe lands one keyframe later
        return real_seek(self, later[0] if later and len(asked) <= 2 else pts)

    monkeypatch.setattr(decode._Reader, "seek", overshooting)
    wanted = [100, 130, 200]
    decoded = decode_frames(path, table, wanted)
    assert sorted(decoded.rows) == wanted
    assert [index_of(decoded.frames[i]) for i in wanted] == wanted
    assert len(asked) >= 4  # two overshoots, then a seek that lands
