"""The optional torchcodec decoder: the same frames as PyAV, chosen where it is faster, PyAV where it is not or
cannot follow (under `auto`: B-frames, scaling, keyframe mode; always: rotation, damaged data), and a one-line
error when asked for and not installed."""

from pathlib import Path

import numpy as np
import pytest
from conftest import coded, index_of, needs_torchcodec
from test_media_files import FILES, full_decode, write_file

from vidlab.cli_common import media_settings
from vidlab.errors import SettingsError
from vidlab.media import load_video
from vidlab.media import torchcodec_decode as tc
from vidlab.media.table import read_frame_table
from vidlab.media.writer import write_video
from vidlab.settings import Sampling, build

NO_B_FRAMES = {"preset": "ultrafast", "g": "30"}


def write(path: Path, count: int = 100, **options) -> Path:
    return write_video(path, [coded(i) for i in range(count)], fps=options.pop("fps", 10), **options)


@needs_torchcodec
@pytest.mark.parametrize("name", list(FILES))
def test_torchcodec_gives_the_frames_a_full_decode_gives(tmp_path, name):
    path, _ = write_file(tmp_path, name)
    table, truth = read_frame_table(path), full_decode(path)
    for sampling in (Sampling(fps=2), Sampling(fps=3, frame_rule="on_screen"), Sampling(num_frames=7)):
        pyav = load_video(path, sampling.model_copy(update={"decoder": "pyav"}))
        clip = load_video(path, sampling.model_copy(update={"decoder": "torchcodec"}))
        assert clip.decoder == "torchcodec" and pyav.decoder == "pyav"
        assert [index_of(f) for f in clip.frames] == [truth[int(table.pts[i])] for i in clip.frame_indices]
        assert clip.frame_indices == pyav.frame_indices and clip.stamps == pyav.stamps
        assert clip.timestamps == pyav.timestamps
        # The same FFmpeg conversion at full size: the same pixels (so `auto` does not change tokens).
        assert np.array_equal(clip.frames, pyav.frames)


@needs_torchcodec
def test_auto_takes_torchcodec_only_where_it_is_faster_and_can_follow(tmp_path):
    plain = write(tmp_path / "plain.mp4", encoder_options=NO_B_FRAMES)
    b_frames = write(tmp_path / "b.mp4")  # x264's default preset: B-frames (PyAV skips what nothing references)
    phone = write(tmp_path / "phone.mp4", rotation=90)
    assert not read_frame_table(plain).reorders and read_frame_table(b_frames).reorders
    assert load_video(plain, Sampling(fps=1)).decoder == "torchcodec"
    assert load_video(plain, Sampling(fps=1), frame_size=lambda h, w, n: (h * 2, w * 2)).decoder == "torchcodec"
    assert load_video(plain, Sampling(fps=1), frame_size=lambda h, w, n: (h // 2, w // 2)).decoder == "pyav"
    assert load_video(plain, Sampling(fps=1, decoder="pyav")).decoder == "pyav"
    assert load_video(plain, Sampling(fps=1, keyframes=True)).decoder == "pyav"
    assert load_video(b_frames, Sampling(fps=1)).decoder == "pyav"
    assert load_video(b_frames, Sampling(fps=1, decoder="torchcodec")).decoder == "torchcodec"
    rotated = load_video(phone, Sampling(fps=1, decoder="torchcodec"), frame_size=lambda h, w, n: (40, 24))
    assert rotated.decoder == "pyav" and rotated.frames.shape[1:3] == (40, 24)  # upright, then scaled


def encode(path: Path, pixel_format: str) -> Path:
    """20 frames of H.264 (no B-frames) stored as `pixel_format`."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 80, 48, pixel_format
        stream.options = {"preset": "ultrafast"}
        for i in range(20):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(coded(i), format="rgb24")))
        container.mux(stream.encode())
    return path


@needs_torchcodec
@pytest.mark.parametrize("pixel_format", sorted(tc.SAME_PIXELS_FORMATS))
def test_auto_sends_torchcodec_only_formats_both_convert_to_the_same_pixels(tmp_path, pixel_format):
    path = encode(tmp_path / "v.mp4", pixel_format)
    assert read_frame_table(path).pixel_format == pixel_format
    clip = load_video(path, Sampling(fps=4))
    assert clip.decoder == "torchcodec"
    assert np.array_equal(clip.frames, load_video(path, Sampling(fps=4, decoder="pyav")).frames)


@needs_torchcodec
def test_ten_bit_video_stays_with_pyav_under_auto(tmp_path):
    # As phones record HEVC: 10-bit 4:2:0, which FFmpeg versions convert to RGB differently.
    path = encode(tmp_path / "ten-bit.mp4", "yuv420p10le")
    assert read_frame_table(path).pixel_format == "yuv420p10le"
    assert load_video(path, Sampling(fps=2)).decoder == "pyav"
    asked = load_video(path, Sampling(fps=2, decoder="torchcodec"))
    assert asked.decoder == "torchcodec" and asked.frame_indices == load_video(path, Sampling(fps=2)).frame_indices


@needs_torchcodec
def test_scaled_frames_keep_their_size_and_picture(tmp_path):
    big = [np.full((360, 640, 3), 40 * i, np.uint8) for i in range(6)]
    path = write_video(tmp_path / "big.mp4", big, fps=2, encoder_options={"preset": "ultrafast"})
    clip = load_video(path, Sampling(fps=1, decoder="torchcodec"), frame_size=lambda h, w, n: (112, 196))
    assert clip.decoder == "torchcodec" and clip.frames.shape == (3, 112, 196, 3)
    assert [abs(int(f.mean()) - int(big[k].mean())) <= 2 for f, k in zip(clip.frames, (1, 3, 5))] == [True] * 3


@needs_torchcodec
def test_a_damaged_packet_sends_the_video_to_pyav_which_skips_it(tmp_path):
    import av

    path = write(tmp_path / "clip.mp4", encoder_options={"preset": "ultrafast"})
    with av.open(str(path)) as container:
        damaged = list(container.streams.video[0].index_entries)[49]
    data = bytearray(path.read_bytes())
    data[damaged.pos : damaged.pos + 4] = b"\xff\xff\xff\xff"
    broken = tmp_path / "damaged.mp4"
    broken.write_bytes(bytes(data))
    table = read_frame_table(broken)
    assert tc.decode_with_torchcodec(broken, table, [19, 49, 59]) is None  # it stops at the packet
    clip = load_video(broken, Sampling(fps=1, decoder="torchcodec"))
    assert clip.decoder == "pyav" and len(clip) == 9 and 4.0 not in clip.stamps
    assert "1 of 10 sampled frames could not be decoded" in clip.warnings[0]


@needs_torchcodec
def test_frames_other_than_the_table_says_are_refused(tmp_path):
    path = write(tmp_path / "plain.mp4", encoder_options=NO_B_FRAMES)
    table = read_frame_table(path)
    assert tc.decode_with_torchcodec(path, table, [3, 40]).rows == {3: 0, 40: 1}
    shifted = table.__class__(**{**table.__dict__, "pts": table.pts + 1})  # a table that does not fit the file
    assert tc.decode_with_torchcodec(path, shifted, [3, 40]) is None


def test_without_torchcodec_auto_uses_pyav_and_asking_for_it_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(tc, "torchcodec_missing", lambda: "torchcodec is not installed (pip install torchcodec)")
    path = write(tmp_path / "plain.mp4", encoder_options=NO_B_FRAMES)
    assert load_video(path, Sampling(fps=1)).decoder == "pyav"
    with pytest.raises(SettingsError, match=r"^decoder: torchcodec is not installed \(pip install torchcodec\); or "
                       r"use auto / pyav$"):
        build(Sampling, {"decoder": "torchcodec"})
    with pytest.raises(SettingsError, match="--decoder: .*pip install torchcodec"):
        media_settings(decoder="torchcodec")
