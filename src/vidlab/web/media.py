"""Media on the page: what an upload or a picked file is, its limits, the files under the media root,
frames for the strip, and the sampled frames marked on a playable video."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vidlab.errors import MediaError
from vidlab.media import load_video
from vidlab.media.images import IMAGE_SUFFIXES
from vidlab.settings import MediaSettings

VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".gif", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"}
THUMB_SIDE = 224  # longest side of a strip frame decoded only for showing (client mode, results)
MAX_LISTED = 5000  # files listed from the media root


def media_choice_parts(paths: list[Path]) -> tuple[Path | None, tuple[Path, ...]]:
    """(video, images) from chosen files: one video, or one or more images.

    Raises:
        MediaError: a mix, several videos, or a file that is neither (naming it and what to pick).
    """
    videos = [p for p in paths if p.suffix.lower() in VIDEO_SUFFIXES]
    images = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES]
    other = [p for p in paths if p not in videos and p not in images]
    if other:
        raise MediaError(f"{other[0].name}: not a video ({', '.join(sorted(VIDEO_SUFFIXES))}) or an image "
                         f"({', '.join(sorted(IMAGE_SUFFIXES))}). Choose a video file or images.")
    if videos and images or len(videos) > 1:
        raise MediaError("choose one video, or one or more images, not both or several videos.")
    return (videos[0] if videos else None), tuple(images)


def check_size(path: Path, max_bytes: int) -> None:
    size = path.stat().st_size
    if size > max_bytes:
        raise MediaError(f"{path.name}: {size / 2**20:.1f} MiB is over the page's upload limit of "
                         f"{max_bytes / 2**20:.0f} MiB. Cut the video shorter, or start the page with a higher "
                         "--max-upload-mb.")


def check_video_length(path: Path, max_seconds: float | None) -> None:
    """Refuse a video longer than `max_seconds` (None: any length), from its frame table (no decoding)."""
    if max_seconds is None:
        return
    from vidlab.media.table import read_frame_table

    length = read_frame_table(Path(path)).end
    if length > max_seconds:
        raise MediaError(f"{Path(path).name}: the video runs {length:.1f}s, longer than the page's limit of "
                         f"{max_seconds:g}s. Use a clip window (start/end) inside it, or a shorter video.")


def list_media(root: Path | None) -> list[str]:
    """Videos and images under the media root (paths relative to it), sorted; at most MAX_LISTED."""
    if root is None or not root.is_dir():
        return []
    found = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES and path.is_file():
            found.append(str(path.relative_to(root)))
            if len(found) >= MAX_LISTED:
                break
    return found


def inside(root: Path, relative: str) -> Path:
    """`root / relative`, refusing anything that leaves the root (.., links out of it)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise MediaError(f"{relative}: not a file under the media root {root}. Pick one from the list.")
    return path


def _thumb_size(height: int, width: int, frames: int) -> tuple[int, int]:
    scale = min(1.0, THUMB_SIDE / max(height, width))
    return max(2, round(height * scale)), max(2, round(width * scale))


def strip_frames(path: Path, settings: MediaSettings, start: float | None, end: float | None):
    """The frames `settings` sample from a video, small (for showing only): (frames, stamps, duration, warnings)."""
    from vidlab.chat import INTERACTIVE_ALLOW_PARTIAL

    sampling = settings.sampling().model_copy(update={"allow_partial": INTERACTIVE_ALLOW_PARTIAL})
    # Not `vidlab.inputs.load_media`: that road sizes frames for a model's processor; these are 224-pixel pictures
    # for the eye (results, client mode: often no model here), sampled by the same settings and decoder.
    clip = load_video(path, sampling, start, end, _thumb_size)
    return list(clip.frames), list(clip.stamps), clip.duration, list(clip.warnings)


def frames_at(path: Path, settings: dict, stamps: list[float]) -> tuple[list[np.ndarray], list[float]]:
    """Thumbnails of the frames an evaluation sampled (`settings`: its run.json settings), those whose stamps
    are among `stamps` (the prediction's own record of what the model saw)."""
    known = {k: v for k, v in settings.items() if k in MediaSettings.model_fields}
    media = MediaSettings(**known)
    frames, times, _, _ = strip_frames(path, media, None, None)
    wanted = {round(s, 2) for s in stamps}
    keep = [i for i, t in enumerate(times) if round(t, 2) in wanted] or list(range(len(times)))
    return [frames[i] for i in keep], [times[i] for i in keep]


def frame_marks(stamps: list[float], duration: float | None) -> list[dict]:
    """Captions (gradio's subtitle dicts) that show, while the video plays, which frames the model was given."""
    marks = []
    for k, stamp in enumerate(stamps):
        following = stamps[k + 1] if k + 1 < len(stamps) else (duration or stamp + 0.5)
        shown = max(0.1, min(0.5, following - stamp))
        marks.append({"text": f"● sampled frame {k + 1}/{len(stamps)} · Time {stamp:.1f}s",
                      "timestamp": [stamp, stamp + shown]})
    return marks
