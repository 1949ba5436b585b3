"""Record VideoLLaMA3's own frames, stamps and `Time X.Xs` prompt text for the fidelity corpus.

Run it in a scratch environment with the original's pins (never vidlab's), with the system FFmpeg:

    python3 -m venv /tmp/vl3-env
    /tmp/vl3-env/bin/pip install numpy==1.24.4 decord==0.6.0 imageio==2.34.0 opencv-python==4.6.0.66 \
        ffmpeg-python pillow jinja2
    /tmp/vl3-env/bin/python tools/fidelity/record_frames.py [--checkout PATH] [--remake-corpus]

It clones VideoLLaMA3 at the pinned commit (or uses --checkout, a checkout of that commit), imports
its videollama3/mm_utils.py with torch, torchvision and transformers stubbed (load_video and
load_video_from_ids use none of them), runs `load_video` as each of the original's callers does,
renders the stamps with the chat template of videollama3/model/processor.py, and writes
tests/data/fidelity/frames.json. Nothing of the original is copied into the repository.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import json
import platform
import subprocess
import sys
import tempfile
import traceback
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from frames_corpus import index_of, make_corpus  # noqa: E402

REPO_URL = "https://github.com/DAMO-NLP-SG/VideoLLaMA3"
PINNED = "05cee23deb854fd6ff82dcff1243a4f682e4d617"
ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "fidelity"
MEDIA = DATA / "media"

LONG = ["cfr25.mp4", "bframes.mp4", "ntsc2997.mp4", "ntsc23976.mkv", "vp8.webm", "long5fps.mp4", "vfr.mp4",
        "vfr.mkv", "late_start.mp4", "audio_first.mkv", "editlist.mp4", "mpeg2.mpg", "rotated.mp4"]
SHORT = ["short.mp4", "one_frame.mp4"]
BY_INDEX = ["frames", "anim.gif"]


def cases() -> list[dict]:
    """Every (file, setting, window, mode) recorded. context: which of the original's callers it mirrors."""
    out = []

    def add(file, context, fps=1.0, max_frames=180, num_frames=None, start=None, end=None, precise=False):
        name = f"{file}|{context}|fps={fps}|max={max_frames}|num={num_frames}|{start}-{end}|precise={precise}"
        out.append(dict(id=name, file=file, context=context, fps=fps, max_frames=max_frames, num_frames=num_frames,
                        start=start, end=end, precise_time=precise))

    for file in LONG + SHORT + BY_INDEX + ["start2.5.mkv"]:
        add(file, "whole")  # chat's inference example and training: fps 1, no window
        add(file, "whole", fps=2.0)
        add(file, "whole", max_frames=4)
        add(file, "whole", num_frames=8)
    for file in LONG:
        for precise in (False, True):
            add(file, "window", start=1.3, end=3.4, precise=precise)
            add(file, "window", fps=2.0, start=1.3, end=3.4, precise=precise)
            add(file, "window", num_frames=8, start=1.3, end=3.4, precise=precise)
            add(file, "window", start=0.5, end=30.0, precise=precise)
        add(file, "window", start=1.2, end=1.9)  # under a second: read by index (decord)
    for file in ["vfr.mp4", "vfr.mkv"]:  # windows opening inside the frame held from 1.2 s to 2.7 s
        for precise in (False, True):
            add(file, "window", start=1.5, end=4.0, precise=precise)
            add(file, "window", fps=2.0, start=2.0, end=3.5, precise=precise)
    for file in ["late_start.mp4", "audio_first.mkv", "mpeg2.mpg"]:  # windows opening before the video starts
        for precise in (False, True):
            add(file, "window", start=0.2, end=2.5, precise=precise)
    for precise in (False, True):
        add("start2.5.mkv", "window", start=3.0, end=5.0, precise=precise)
        add("start2.5.mkv", "window", start=1.0, end=4.2, precise=precise)
    for precise in (False, True):  # stamps at x.x5 s: the template rounds them as numpy does (2.15 -> 2.2)
        add("cfr25.mp4", "window", start=2.15, end=4.4, precise=precise)
        add("ntsc2997.mp4", "window", fps=2.0, start=0.35, end=3.9, precise=precise)
    for file in LONG:  # other rates, and windows on whole seconds (ticks and frames tie there)
        add(file, "whole", fps=0.5)
        for precise in (False, True):
            add(file, "window", fps=3.0, start=0.7, end=3.9, precise=precise)
            add(file, "window", start=2.0, end=4.0, precise=precise)
            add(file, "window", max_frames=3, fps=2.0, start=0.4, end=4.6, precise=precise)
    for precise in (False, True):
        add("start2.5.mkv", "window", fps=2.0, start=2.6, end=4.0, precise=precise)
        add("start2.5.mkv", "window", num_frames=8, start=2.6, end=5.0, precise=precise)
        add("late_start.mp4", "window", fps=2.0, start=0.6, end=2.0, precise=precise)
        add("audio_first.mkv", "window", num_frames=8, start=1.0, end=4.5, precise=precise)
        add("mpeg2.mpg", "window", num_frames=8, start=0.2, end=6.0, precise=precise)
    for file in BY_INDEX:
        add(file, "window", start=0.5, end=4.0)
        add(file, "window", start=1.0, end=1.5)
        add(file, "window", num_frames=8, start=0.5, end=4.0)
    return out


def checkout(path: str | None) -> Path:
    if path:
        return Path(path)
    where = Path(tempfile.mkdtemp(prefix="vl3-")) / "VideoLLaMA3"
    # only the code: the repository's videos and report are large and not needed
    subprocess.run(["git", "clone", "--quiet", "--filter=blob:none", "--no-checkout", REPO_URL, str(where)], check=True)
    subprocess.run(["git", "-C", str(where), "checkout", "--quiet", PINNED, "--", "videollama3"], check=True)
    return where


def import_original(repo: Path):
    """videollama3.mm_utils without its package __init__ (which loads the model), the heavy imports stubbed."""
    class Stub(types.ModuleType):
        def __getattr__(self, name):  # annotations and base classes of code the recorder never runs
            return sys.modules.get(f"{self.__name__}.{name}", object)

    for name in ["torch", "torchvision", "torchvision.transforms", "torchvision.transforms.functional", "transformers"]:
        sys.modules.setdefault(name, Stub(name))
    package = types.ModuleType("videollama3")
    package.__path__ = [str(repo / "videollama3")]
    sys.modules["videollama3"] = package
    return importlib.import_module("videollama3.mm_utils")


def chat_template(repo: Path, image_token: str) -> str:
    """DEFAULT_CHAT_TEMPLATE of videollama3/model/processor.py, evaluated from its source (its imports
    need the model)."""
    tree = ast.parse((repo / "videollama3" / "model" / "processor.py").read_text())
    template = ""
    for node in tree.body:
        target = getattr(node, "target", None) or (node.targets[0] if isinstance(node, ast.Assign) else None)
        if getattr(target, "id", None) != "DEFAULT_CHAT_TEMPLATE":
            continue
        value = eval(compile(ast.Expression(node.value), "processor.py", "eval"), {"DEFAULT_IMAGE_TOKEN": image_token})
        template = template + value if isinstance(node, ast.AugAssign) else value
    return template


def render(template: str, frames: int, timestamps) -> str:
    """The user turn as the original's processor renders it (transformers 4.46's chat-template environment)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    messages = [{"role": "user", "content": [{"type": "video", "num_frames": frames, "timestamps": timestamps},
                                             {"type": "text", "text": "Q"}]}]
    return env.from_string(template).render(messages=messages, add_generation_prompt=False)


def rotation(path: Path) -> int:
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                                      capture_output=True, check=True).stdout)
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    return int(next((d.get("rotation", 0) for d in video.get("side_data_list", [])), 0))


def upright(frame: np.ndarray, sideways: bool) -> np.ndarray:
    """(h, w, 3) from what the original returns: (3, h, w) from FFmpeg, (h, w, 3) by index."""
    frame = np.asarray(frame)
    if frame.ndim == 3 and frame.shape[0] == 3 and frame.shape[2] != 3:
        frame = frame.transpose(1, 2, 0)
    frame = np.ascontiguousarray(frame)
    if sideways:  # the original reshapes FFmpeg's turned frames with the stored size: undo that to read them
        frame = np.frombuffer(frame.tobytes(), np.uint8).reshape(frame.shape[1], frame.shape[0], 3)
    return frame


def record(mm, template: str, case: dict) -> dict:
    path = MEDIA / case["file"]
    fps = None if case["num_frames"] else case["fps"]
    most = case["num_frames"] or case["max_frames"]
    result = {k: case[k] for k in ("id", "file", "context", "fps", "max_frames", "num_frames", "start", "end",
                                   "precise_time")}
    try:
        frames, stamps = mm.load_video(str(path), case["start"], case["end"], fps=fps, max_frames=most,
                                       precise_time=case["precise_time"])
    except Exception as err:  # the original crashes on this case: recorded as such
        result["crash"] = "".join(traceback.format_exception_only(type(err), err)).strip()
        return result
    sideways = path.is_file() and abs(rotation(path)) % 180 == 90
    pictures = [upright(f, sideways) for f in frames]
    result.update(
        codes=[index_of(p) for p in pictures],
        stamps=[float(s) for s in stamps],
        stamp_types=sorted({type(s).__name__ for s in stamps}),
        prompt=None,
        md5=[hashlib.md5(p.tobytes()).hexdigest() for p in pictures],
        shape=list(pictures[0].shape) if pictures else None,
        reshaped_with_stored_size=sideways,
    )
    try:
        result["prompt"] = render(template, len(pictures), stamps)
    except Exception as err:  # e.g. fewer stamps than frames: the template fails on the missing one
        result["prompt_crash"] = "".join(traceback.format_exception_only(type(err), err)).strip()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", help="a checkout of VideoLLaMA3 at the pinned commit (default: clone it)")
    parser.add_argument("--remake-corpus", action="store_true", help="re-encode the corpus (changes every file)")
    args = parser.parse_args()
    if args.remake_corpus or not MEDIA.exists():
        make_corpus(MEDIA)
    repo = checkout(args.checkout)
    mm = import_original(repo)
    template = chat_template(repo, mm.DEFAULT_IMAGE_TOKEN)
    ffmpeg_version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    import cv2
    import decord
    import imageio

    recorded = {
        "original": {"repository": REPO_URL, "commit": PINNED, "function": "videollama3/mm_utils.py:load_video"},
        "environment": {"ffmpeg": ffmpeg_version, "python": platform.python_version(), "numpy": np.__version__,
                        "decord": decord.__version__, "imageio": imageio.__version__, "opencv": cv2.__version__},
        "cases": [record(mm, template, case) for case in cases()],
    }
    target = DATA / "frames.json"
    temporary = target.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(recorded, indent=1) + "\n")
    temporary.replace(target)
    crashed = sum("crash" in c for c in recorded["cases"])
    print(f"{len(recorded['cases'])} cases ({crashed} where the original crashes) -> {target}")


if __name__ == "__main__":
    main()
