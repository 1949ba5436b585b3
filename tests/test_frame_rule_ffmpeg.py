"""vidlab's default frame rule against FFmpeg itself, run as VideoLLaMA3's loader runs it.

The original `load_video` (videollama3/mm_utils.py) probes the file with ffprobe, runs
`ffmpeg [-ss START -t LENGTH] -i FILE -vf fps=fps=F:round=down` and stamps the frames
`np.arange(start, start + length + 1/F, 1/F)`, then keeps `np.linspace(0, n - 1, max_frames)` of
them. These tests do exactly that with the system's FFmpeg on files the FFmpeg command line
encoded (as users' files are), and compare frames and stamps with `vidlab.load_video`. They need
FFmpeg's command-line tools, which vidlab itself never needs (.ci/run installs them).
"""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import coded, index_of

from vidlab.media import load_video
from vidlab.settings import Sampling

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="needs FFmpeg's command-line tools to compare with (apt-get install ffmpeg; .ci/run does)",
)
HEIGHT, WIDTH = 48, 80


def encode(path: Path, count: int, rate: str, *options: str) -> Path:
    """`count` coded frames at `rate`, encoded by the FFmpeg command line."""
    frames = b"".join(coded(i, HEIGHT, WIDTH).tobytes() for i in range(count))
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
                    f"{WIDTH}x{HEIGHT}", "-r", rate, "-i", "pipe:", "-pix_fmt", "yuv420p", *options, str(path)],
                   input=frames, check=True, timeout=120)
    return path


def original(path: Path, fps: float, start=None, end=None, max_frames: int = 180) -> tuple[list[int], list[float]]:
    """The frames (their coded indices) and stamps VideoLLaMA3's load_video gives."""
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format",
                                       "-show_streams", str(path)], capture_output=True, text=True).stdout)
    length = float(probe["format"]["duration"])
    stream = next(s for s in probe["streams"] if s["codec_type"] == "video")
    trimmed = start is not None or end is not None
    if start is not None:
        begin = max(float(stream["start_time"]), start)
        length -= begin - start
    else:
        begin = float(stream["start_time"])
    if end is not None:
        length = min(length, end - begin)
    cut = ["-ss", str(begin), "-t", str(length)] if trimmed else []
    raw = subprocess.run(["ffmpeg", "-loglevel", "error", *cut, "-i", str(path), "-vf", f"fps=fps={fps}:round=down",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"], capture_output=True, check=True).stdout
    frames = [index_of(f) for f in np.frombuffer(raw, np.uint8).reshape(-1, HEIGHT, WIDTH, 3)]
    stamps = np.arange(begin, begin + length + 1 / fps, 1 / fps)[: len(frames)].tolist()
    if len(frames) > max_frames:
        keep = np.linspace(0, len(frames) - 1, max_frames, dtype=int)
        frames, stamps = [frames[i] for i in keep], [stamps[i] for i in keep]
    return frames, stamps


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ffmpeg")
    return {
        "b-frames": encode(folder / "medium.mp4", 100, "10", "-c:v", "libx264", "-preset", "medium"),
        "no-b-frames": encode(folder / "ultrafast.mp4", 100, "10", "-c:v", "libx264", "-preset", "ultrafast"),
        "ntsc": encode(folder / "ntsc.mp4", 160, "30000/1001", "-c:v", "libx264", "-g", "48"),
        "long": encode(folder / "long.mp4", 400, "2", "-c:v", "libx264", "-g", "40"),  # 200 s: 200 ticks > 180
        "matroska": encode(folder / "clip.mkv", 100, "10", "-c:v", "libx264"),
    }


@pytest.mark.parametrize("name", ["b-frames", "no-b-frames", "ntsc", "long", "matroska"])
@pytest.mark.parametrize("fps, start, end", [(1, None, None), (2, None, None), (0.5, None, None), (1, 1.5, 6.2),
                                             (2, 2.25, None), (1, None, 3.5)])
def test_frames_and_stamps_are_the_original_loaders(files, name, fps, start, end):
    path = files[name]
    frames, stamps = original(path, fps, start, end)
    clip = load_video(path, Sampling(fps=fps), start=start, end=end)
    assert [index_of(f) for f in clip.frames] == frames
    assert clip.stamps == pytest.approx(stamps)
    if name == "long" and start is None and end is None and fps >= 1:
        assert len(frames) == 180  # thinned by linspace, as the original does
