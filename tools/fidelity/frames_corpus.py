"""The media corpus of the frame fidelity recordings: tiny files of every kind users meet.

Each frame shows its own index in binary (10 black / white bars, as tests/conftest.py's `coded`),
so which source frame an output frame is can be read off its pixels on any decoder. Made with the
system FFmpeg command line (as users' files are); committed, so tests never depend on an encoder.
Standard library and numpy only: it runs in the recorder's scratch environment.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

HEIGHT, WIDTH, BITS = 48, 80, 10


def coded(index: int) -> np.ndarray:
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    bar = WIDTH // BITS
    for bit in range(BITS):
        if (index >> bit) & 1:
            frame[:, bit * bar:(bit + 1) * bar] = 255
    return frame


def index_of(frame: np.ndarray) -> int:
    """The index a (height, width, 3) frame shows; a frame stored sideways is turned back first."""
    if frame.shape[0] > frame.shape[1]:
        frame = np.rot90(frame, -1)
    bar = frame.shape[1] // BITS
    return sum(1 << bit for bit in range(BITS) if frame[:, bit * bar:(bit + 1) * bar].mean() > 127)


def _ffmpeg(*args: str, frames: int = 0, rate: str = "25") -> None:
    raw = b"".join(coded(i).tobytes() for i in range(frames))
    head = ["ffmpeg", "-loglevel", "error", "-y"]
    if frames:
        head += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-r", rate, "-i", "pipe:"]
    subprocess.run([*head, *args], input=raw or None, check=True, timeout=300)


X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"]
TONE = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000:duration={}"]


def tone(seconds: float) -> list[str]:
    return [a.format(seconds) for a in TONE]


def make_corpus(out: Path) -> None:
    """Write every corpus file into `out` (overwriting)."""
    out.mkdir(parents=True, exist_ok=True)
    o = lambda name: str(out / name)  # noqa: E731
    _ffmpeg(*X264, "-bf", "0", "-g", "25", o("cfr25.mp4"), frames=125)
    _ffmpeg(*X264, "-bf", "3", "-g", "50", o("bframes.mp4"), frames=125)
    _ffmpeg(*X264, "-bf", "0", o("ntsc2997.mp4"), frames=120, rate="30000/1001")
    _ffmpeg(*X264, o("ntsc23976.mkv"), frames=96, rate="24000/1001")
    _ffmpeg("-c:v", "libvpx", "-b:v", "200k", "-g", "25", o("vp8.webm"), frames=100)
    _ffmpeg(*X264, "-bf", "0", "-g", "10", o("long5fps.mp4"), frames=200, rate="5")
    _ffmpeg(*X264, o("short.mp4"), frames=8)
    _ffmpeg(*X264, o("one_frame.mp4"), frames=1)
    # VFR: 30 frames 0.04 s apart, one held 1.5 s (1.2 s to 2.7 s), then 29 frames 0.1 s apart
    _ffmpeg("-vf", "setpts='if(lt(N,30),N*0.04,if(eq(N,30),1.2,2.7+(N-31)*0.1))/TB'", "-fps_mode", "passthrough",
            *X264, "-bf", "0", "-video_track_timescale", "1000", o("vfr.mp4"), frames=60)
    _ffmpeg("-vf", "setpts='if(lt(N,30),N*0.04,if(eq(N,30),1.2,2.7+(N-31)*0.1))/TB'", "-fps_mode", "passthrough",
            *X264, o("vfr.mkv"), frames=60)
    # audio first: the video stream starts 0.5 s (mp4: an empty edit) or 0.7 s (mkv) after the file
    cfr = o("cfr25.mp4")
    _ffmpeg("-itsoffset", "0.5", "-i", cfr, *tone(5.5), "-map", "0:v", "-map", "1:a", "-c:v", "copy",
            "-c:a", "aac", "-b:a", "16k", o("late_start.mp4"))
    _ffmpeg("-itsoffset", "0.7", "-i", cfr, *tone(5.7), "-map", "0:v", "-map", "1:a", "-c:v", "copy",
            "-c:a", "libvorbis", o("audio_first.mkv"))
    # an edit list that hides the decoded frames before 1.0 s (stream copy from a keyframe at 0)
    _ffmpeg(*X264, "-bf", "0", "-g", "50", o("gop50.tmp.mp4"), frames=125)
    _ffmpeg("-ss", "1.0", "-i", o("gop50.tmp.mp4"), "-c", "copy", o("editlist.mp4"))
    (out / "gop50.tmp.mp4").unlink()
    # Matroska whose timestamps start at 2.5 s
    _ffmpeg(*X264, "-output_ts_offset", "2.5", o("start2.5.mkv"), frames=100)
    # MPEG-2 program stream with audio (seeks land on pack boundaries, often past the frame asked)
    _ffmpeg(*tone(8), "-c:v", "mpeg2video", "-q:v", "4", "-g", "12", "-c:a", "mp2", "-b:a", "32k", "-shortest",
            o("mpeg2.mpg"), frames=200)
    # stored 80x48, shown turned 90 degrees
    _ffmpeg("-i", cfr, "-c", "copy", "-metadata:s:v:0", "rotate=90", o("rotated.mp4"))
    # a folder of frame images and a GIF (the original reads both by index, at 3 and 25 frames a second)
    folder = out / "frames"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    _ffmpeg("-q:v", "2", str(folder / "%05d.jpg"), frames=20)
    _ffmpeg("-vf", "split[a][b];[a]palettegen[p];[b][p]paletteuse", o("anim.gif"), frames=40, rate="10")


if __name__ == "__main__":
    import sys

    make_corpus(Path(sys.argv[1]))
