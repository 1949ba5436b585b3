"""Video decoding: vidlab's loader against transformers' PyAV loader and torchcodec, 180 frames at 1 fps.

    python benchmarks/decode.py [--files long,mid,mid-b,4k] [--cache DIR] [--methods ...]

The files are generated (once; kept in --cache) with H.264, each keyframe GOP frames apart:
    long    60 min, 640x360, 25 fps, GOP 250, x264 ultrafast (no B-frames)
    mid     10 min, 1280x720, 30 fps, GOP 250, x264 ultrafast (no B-frames)
    mid-b   10 min, 1280x720, 30 fps, GOP 250, x264 medium (B-frames)
    4k      3 min, 3840x2160, 2 fps, GOP 20, x264 ultrafast: 180 frames of 4K
Methods, each in its own process (wall and CPU time of one call on a warm file cache, and the
process's peak memory above what it held before the call; libraries are imported before the clock):
    transformers      transformers.video_utils.load_video(backend="pyav") with the VideoLLaMA3 video
                      processor's sampling (fps 1, at most 180 frames): the reference
    torchcodec        the same with backend="torchcodec" (needs system FFmpeg and `pip install torchcodec`)
    torchcodec-exact  torchcodec's decoder (exact seek mode) asked for the frames vidlab's default rule picks:
                      the same work as `vidlab` (the picks are computed before the clock starts)
    vidlab            vidlab.load_video, default settings: VideoLLaMA3's rule, exact frames, full size, decoder
                      auto (torchcodec where it is installed, the stream has no B-frames and frames keep their
                      size; else PyAV)
    vidlab-pyav       `vidlab` with Sampling(decoder="pyav"): what vidlab does where torchcodec is not installed
    vidlab-sized      `vidlab`, frames scaled while decoding to the size VideoLLaMA3-2B's processor uses (what
                      every command does)
    vidlab-sized-torchcodec  `vidlab-sized` with Sampling(decoder="torchcodec")
    vidlab-keyframes  `vidlab-sized` with Sampling(keyframes=True): the nearest keyframes instead (PyAV)
    vidlab-pyav-one-stream, vidlab-sized-one-stream  `vidlab-pyav` and `vidlab-sized` with Sampling(gop_workers=1):
                      one stream, as before GOP runs were decoded in parallel (the other vidlab rows split a long
                      video's keyframe groups over one stream per core: this process and worker processes)
    vidlab-sized-warm `vidlab-sized` called a second time: its worker processes already started
Peak memory is this process's; `workers MB` the peak resident memory of each worker process (libraries included);
CPU seconds include the workers'.
Prints a table with each method's ratio against transformers measured in the same run, and each parallel
row's against one stream.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import peak

FILES = {
    "long": {"seconds": 3600, "size": (640, 360), "fps": 25, "gop": 250, "preset": "ultrafast"},
    "mid": {"seconds": 600, "size": (1280, 720), "fps": 30, "gop": 250, "preset": "ultrafast"},
    "mid-b": {"seconds": 600, "size": (1280, 720), "fps": 30, "gop": 250, "preset": "medium"},
    "4k": {"seconds": 180, "size": (3840, 2160), "fps": 2, "gop": 20, "preset": "ultrafast"},
}
METHODS = ["transformers", "torchcodec", "torchcodec-exact", "vidlab", "vidlab-pyav", "vidlab-sized",
           "vidlab-sized-torchcodec", "vidlab-keyframes", "vidlab-pyav-one-stream", "vidlab-sized-one-stream",
           "vidlab-sized-warm"]
DEFAULT_CACHE = Path.home() / ".cache" / "vidlab-benchmarks"


def generate(name: str, folder: Path) -> Path:
    """The benchmark file `name` (written once, then reused)."""
    import numpy as np

    from vidlab.media.writer import write_video

    spec = FILES[name]
    path = folder / f"{name}.mp4"
    if path.exists():
        return path
    width, height = spec["size"]
    count = spec["seconds"] * spec["fps"]
    rows, columns = np.mgrid[0:height, 0 : 2 * width]
    wide = np.stack([columns % 256, rows % 256, (columns // 3 + rows // 2) % 256], -1).astype(np.uint8)
    frames = (np.ascontiguousarray(wide[:, (4 * i) % width : (4 * i) % width + width]) for i in range(count))
    options = {"preset": spec["preset"], "g": str(spec["gop"]), "keyint_min": str(spec["gop"]), "sc_threshold": "0"}
    print(f"writing {path} ({count} frames, {width}x{height}); once", file=sys.stderr, flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    return write_video(path, frames, fps=spec["fps"], encoder_options=options)


def _cpu_seconds() -> float:
    """User and system time of every thread of this process: steadier than wall time on a busy machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(method: str, path: Path) -> dict:
    """One call of `method` on `path`: seconds, peak memory above the start, frames and their size."""
    from functools import partial

    import numpy as np

    if method in ("transformers", "torchcodec"):
        from transformers import VideoLlama3VideoProcessor
        from transformers.video_utils import load_video as hf_load_video

        if method == "torchcodec":
            import torchcodec  # noqa: F401  (fail here, not inside transformers, when it is missing)
        sample = partial(VideoLlama3VideoProcessor().sample_frames, fps=1, max_frames=180)

        def run():
            video, _ = hf_load_video(str(path), backend="pyav" if method == "transformers" else "torchcodec",
                                     sample_indices_fn=lambda metadata, **kwargs: sample(metadata))
            return np.asarray(video)
    elif method == "torchcodec-exact":
        from torchcodec.decoders import VideoDecoder

        from vidlab.media.sampling import pick_frames
        from vidlab.media.table import read_frame_table
        from vidlab.media.video import timeline
        from vidlab.settings import Sampling

        picks = pick_frames(timeline(read_frame_table(path)), Sampling()).frames

        def run():
            return VideoDecoder(str(path), seek_mode="exact", dimension_order="NHWC").get_frames_at(picks).data.numpy()
    else:
        from vidlab.inputs import FrameSizer
        from vidlab.media import load_video
        from vidlab.media.torchcodec_decode import torchcodec_missing
        from vidlab.settings import Sampling

        torchcodec_missing()  # loads torchcodec where installed: once per process, before the first video

        decoder = "pyav" if "pyav" in method else "torchcodec" if method.endswith("torchcodec") else "auto"
        sampling = Sampling(keyframes=method == "vidlab-keyframes", decoder=decoder,
                            gop_workers=1 if method.endswith("one-stream") else None)
        # VideoLLaMA3-2B's video processor: 28x28 pixels a token, at least 16 tokens a frame, 16384 a video.
        full_size = method in ("vidlab", "vidlab-pyav", "vidlab-pyav-one-stream")
        sizer = None if full_size else FrameSizer(28, 16 * 28 * 28, 16384, None)

        def run():
            clip = load_video(path, sampling, frame_size=sizer)
            decoders.append(clip.decoder)
            return clip.frames

    decoders: list[str] = []  # vidlab's methods: the library that decoded
    if method.endswith("-warm"):
        run()  # starts the worker processes
        decoders.clear()
    from vidlab.media import gop_workers

    before = peak.start()
    workers_cpu = {w.process.pid: peak.process_cpu_seconds(w.process.pid) for w in gop_workers._idle}
    cpu_started = _cpu_seconds()
    started = time.perf_counter()
    frames = run()
    seconds = time.perf_counter() - started
    # and the worker processes' (vidlab's parallel rows): the CPU time of the whole decode
    cpu_seconds = _cpu_seconds() - cpu_started + sum(
        peak.process_cpu_seconds(w.process.pid) - workers_cpu.get(w.process.pid, 0.0) for w in gop_workers._idle)
    height_width = frames.shape[1:3] if frames.shape[-1] == 3 else frames.shape[2:4]  # torchcodec's are NCHW
    workers_mb = [mb for worker in gop_workers._idle if (mb := peak.process_peak_mb(worker.process.pid)) is not None]
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mb": max(peak.peak_mb() - before, 0.0),
            "frames": int(frames.shape[0]), "shape": list(height_width), "decoder": "".join(decoders) or "-",
            "workers_mb": "+".join(f"{mb:.0f}" for mb in workers_mb) or "-"}


def run_measurement(method: str, path: Path) -> dict | None:
    process = subprocess.run([sys.executable, __file__, "--measure", method, str(path)], capture_output=True,
                             text=True, timeout=3600)
    if process.returncode != 0:
        reason = (process.stderr.strip().splitlines() or ["failed"])[-1]
        print(f"  {method}: not measured ({reason})", file=sys.stderr)
        return None
    return json.loads(process.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default=",".join(FILES), help=f"comma-separated, of {', '.join(FILES)}")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the generated files are kept")
    parser.add_argument("--measure", nargs=2, metavar=("METHOD", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))))
        return
    rows = []
    for name in args.files.split(","):
        path = generate(name, args.cache)
        results = {method: run_measurement(method, path) for method in args.methods.split(",")}
        reference = results.get("transformers")
        for method, result in results.items():
            if result is None:
                continue
            ratio = f"{reference['seconds'] / result['seconds']:.1f}x" if reference else "-"
            rows.append((name, method, f"{result['seconds']:.2f}", ratio, f"{result['cpu_seconds']:.2f}",
                         f"{reference['cpu_seconds'] / result['cpu_seconds']:.1f}x" if reference else "-",
                         f"{result['peak_mb']:.0f}", result["workers_mb"],
                         f"{result['frames']} x {result['shape'][1]}x{result['shape'][0]}", result["decoder"]))
    header = ("file", "method", "seconds", "vs transformers", "CPU seconds", "vs transformers", "peak MB above start",
              "workers MB", "frames", "decoder")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    for file, method, seconds, *_ in rows:  # the parallel rows against one stream, measured in the same run
        base = next((r for r in rows if r[0] == file and r[1] == method.removesuffix("-warm") + "-one-stream"), None)
        if base is not None:
            print(f"{file} {method}: {float(base[2]) / float(seconds):.2f}x the speed of {base[1]}")


if __name__ == "__main__":
    main()
