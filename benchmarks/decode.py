"""Sampled decoding vs the naive path: decode every frame to RGB, then keep the sampled ones.

    python benchmarks/decode.py [--seconds 60] [--fps 30] [--size 320x240] [--repeat 3]

Prints the time of each path, their ratio, and the peak frame memory each holds. Both paths
return the same frames (checked). The video is generated in a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from vidlab.media import Sampling, load_video
from vidlab.media.sampling import select_frames
from vidlab.media.writer import write_video


def naive_load(path: Path, sampling: Sampling) -> tuple[np.ndarray, int]:
    """Reference path: every frame converted to RGB and kept, then sampled."""
    with av.open(str(path)) as container:
        decoded = [(f.time, f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    times = [t - decoded[0][0] for t, _ in decoded]
    frames = [f for _, f in decoded]
    held = sum(f.nbytes for f in frames)
    chosen = select_frames(times, times[-1] + (times[-1] - times[0]) / (len(times) - 1), sampling)
    return np.stack([frames[i] for i in chosen]), held


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    count = int(args.seconds * args.fps)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    frames = (np.roll(base, 3 * i, axis=1) for i in range(count))
    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(Path(tmp) / "bench.mp4", frames, fps=args.fps)
        sampling = Sampling(fps=1)
        sampled_s, clip = best_of(args.repeat, lambda: load_video(path, sampling))
        naive_s, (naive_frames, held) = best_of(args.repeat, lambda: naive_load(path, sampling))
    assert np.array_equal(clip.frames, naive_frames), "the two paths returned different frames"
    print(f"video: {count} frames, {args.size}, {args.seconds:g}s; sampled {len(clip)} frames at 1 fps")
    print(f"naive (all frames to RGB): {naive_s:.3f}s, holds {held / 2**20:.0f} MiB of frames")
    print(f"vidlab load_video:         {sampled_s:.3f}s, holds {clip.frames.nbytes / 2**20:.1f} MiB of frames")
    print(f"speed-up: {naive_s / sampled_s:.2f}x")


if __name__ == "__main__":
    main()
