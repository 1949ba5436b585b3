"""Caption data sets: MSR-VTT, MSVD and VATEX annotation files.

Each video has several reference captions (20 in MSR-VTT, about 40 in MSVD, 10 English and 10
Chinese in VATEX). `--captions train` makes one record per caption (for training); `--captions
eval` makes one record per video that ends with the question and lists every caption in
"references" (for `vidlab eval`, which scores BLEU and CIDEr against all of them).

- MSR-VTT (train_val_videodatainfo.json, test_videodatainfo.json): one JSON object with
  "videos": [{"video_id": "video0", "split": "train"|"validate"|"test", "start time", "end time", ...}]
  and "sentences": [{"video_id", "caption", "sen_id"}]. The files video0.mp4 ... are already cut to
  the clip ("start time"/"end time" are times in the YouTube source), so no clip window is set.
- MSVD: AllVideoDescriptions.txt ("#" header lines, then "<clip> <caption>" per line, the clip
  named <youtube id>_<start>_<end>, its file <clip>.avi in YouTubeClips/), or the multilingual
  "MSR Video Description Corpus.csv" (VideoID, Start, End, WorkerID, Source, AnnotationTime,
  Language, Description), of which --language picks one language (English by default).
- VATEX (vatex_training_v1.0.json, vatex_validation_v1.0.json, ...): a JSON list of
  {"videoID": "<youtube id>_<start:06d>_<end:06d>", "enCap": [...], "chCap": [...]}. The clip file is
  <videoID>.mp4; when only the full YouTube video <youtube id>.mp4 is under the data root, the
  record uses it with start/end from the id.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vidlab.data.convert.common import (
    Item,
    MediaMissing,
    VideoFinder,
    caption_records,
    failed,
    json_items,
    load_json_object,
)
from vidlab.errors import AnnotationConversionError
from vidlab.files import TEXT_ENCODING

PROMPT = "Describe what happens in the video in one sentence."
MSRVTT_SPLITS = ("train", "validate", "test")
_CLIP_BOUNDS = re.compile(r"^(?P<video>.+)_(?P<start>\d+)_(?P<end>\d+)$")


def _clean(captions: list[Any]) -> tuple[list[str], int]:
    """The non-empty string captions (stripped, first occurrence of each kept) and how many were dropped."""
    kept: list[str] = []
    for caption in captions:
        if isinstance(caption, str) and caption.strip() and caption.strip() not in kept:
            kept.append(caption.strip())
    return kept, len(captions) - len(kept)


def _video_items(
    groups: dict[str, list[tuple[str, Any]]],
    order: list[str],
    finder: VideoFinder,
    prompt: str,
    mode: str,
    where_of: dict[str, str],
) -> Iterator[Item]:
    for video_id in order:
        where = where_of[video_id]
        captions, dropped = _clean([caption for _, caption in groups.get(video_id, [])])
        if not captions:
            yield Item(where, problem=f"video {video_id} has no usable caption")
            continue
        video = finder.find(video_id)
        if video is None:
            yield Item(where, problem=finder.missing(video_id), problem_kind="missing media")
            continue
        notes = ["videos with empty or repeated captions (left out)"] if dropped else []
        yield Item(where, records=caption_records(video, captions, video_id, prompt, mode), notes=notes)


# ---------------------------------------------------------------------------------------------------------------------
# MSR-VTT


def read_msrvtt(
    path: Path, data_root: Path | None = None, prompt: str | None = None, captions: str = "train",
    split: str | None = None, **_: Any,
) -> Iterator[Item]:
    data = load_json_object(path, "MSR-VTT's train_val_videodatainfo.json or test_videodatainfo.json")
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list) or not isinstance(
        data.get("sentences"), list
    ):
        raise AnnotationConversionError(
            f'{path}: not an MSR-VTT annotation file (expected one JSON object with "videos" and "sentences" lists, '
            "as train_val_videodatainfo.json). Check the file or --from."
        )
    if split is not None and split not in MSRVTT_SPLITS:
        raise AnnotationConversionError(f"--split {split!r}: MSR-VTT's splits are {', '.join(MSRVTT_SPLITS)}.")
    finder = VideoFinder(data_root)
    order: list[str] = []
    where_of: dict[str, str] = {}
    for index, video in enumerate(data["videos"]):
        where = f"{path}:videos[{index}]"
        if not isinstance(video, dict) or not isinstance(video.get("video_id"), str):
            yield Item(where, problem='a video entry needs a "video_id" string')
            continue
        if split is not None and video.get("split") != split:
            continue
        if video["video_id"] in where_of:
            first = where_of[video["video_id"]]
            yield Item(where, problem=f"video {video['video_id']} is listed twice (first at {first})")
            continue
        order.append(video["video_id"])
        where_of[video["video_id"]] = where
    groups: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for index, sentence in enumerate(data["sentences"]):
        where = f"{path}:sentences[{index}]"
        if not isinstance(sentence, dict) or "video_id" not in sentence or "caption" not in sentence:
            yield Item(where, problem='a sentence needs "video_id" and "caption"')
            continue
        if sentence["video_id"] not in where_of:
            if split is None:
                yield Item(where, problem=f"caption of video {sentence['video_id']!r}, which \"videos\" does not list")
            continue
        groups[sentence["video_id"]].append((where, sentence["caption"]))
    yield from _video_items(groups, order, finder, prompt or PROMPT, captions, where_of)


# ---------------------------------------------------------------------------------------------------------------------
# MSVD


def _msvd_text(path: Path, text: str) -> Iterator[tuple[str, str, str]]:
    """(where, clip, caption) of AllVideoDescriptions.txt."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        clip, _, caption = line.strip().partition(" ")
        yield f"{path}:{number}", clip, caption


def _msvd_csv(path: Path, text: str, language: str) -> Iterator[tuple[str, str, str]]:
    """(where, clip, caption) of the corpus CSV, in one language."""
    reader = csv.DictReader(io.StringIO(text))
    needed = {"VideoID", "Start", "End", "Language", "Description"}
    if not needed <= set(reader.fieldnames or []):
        raise AnnotationConversionError(f"{path}: an MSVD corpus CSV needs the columns {', '.join(sorted(needed))}; "
                                        f"this one has {', '.join(reader.fieldnames or [])}.")
    for row in reader:
        if (row.get("Language") or "").strip().lower() == language.lower():
            clip = f"{row['VideoID']}_{row['Start']}_{row['End']}"
            yield f"{path}:{reader.line_num}", clip, row.get("Description") or ""


def read_msvd(
    path: Path, data_root: Path | None = None, prompt: str | None = None, captions: str = "train",
    language: str | None = None, **_: Any,
) -> Iterator[Item]:
    try:
        text = path.read_text(encoding=TEXT_ENCODING)
    except UnicodeDecodeError as err:
        raise AnnotationConversionError(f"{path}: not UTF-8 text ({err.reason}). Save the file as UTF-8.") from err
    rows = _msvd_csv(path, text, language or "English") if path.suffix.lower() == ".csv" else _msvd_text(path, text)
    finder = VideoFinder(data_root, default_suffix=".avi")
    groups: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    order: list[str] = []
    where_of: dict[str, str] = {}
    for where, clip, caption in rows:
        if not caption.strip():
            yield Item(where, problem=f"clip {clip} has an empty caption on this line")
            continue
        if clip not in where_of:
            order.append(clip)
            where_of[clip] = where
        groups[clip].append((where, caption))
    if not order:
        raise AnnotationConversionError(f"{path}: no caption found. MSVD's AllVideoDescriptions.txt has '<clip> "
                                        "<caption>' lines; its corpus CSV needs --language to match its Language "
                                        "column.")
    yield from _video_items(groups, order, finder, prompt or PROMPT, captions, where_of)


# ---------------------------------------------------------------------------------------------------------------------
# VATEX


def _vatex_video(video_id: str, finder: VideoFinder) -> tuple[str, dict]:
    """The clip file, or the full YouTube video with the clip window from the id."""
    found = finder.find(video_id)
    if found is not None:
        return found, {}
    bounds = _CLIP_BOUNDS.match(video_id)
    if bounds is not None:
        whole = finder.find(bounds["video"])
        if whole is not None:
            return whole, {"start": float(int(bounds["start"])), "end": float(int(bounds["end"]))}
    raise MediaMissing(finder.missing(video_id) + " (nor the full YouTube video named by the id's first part)")


def read_vatex(
    path: Path, data_root: Path | None = None, prompt: str | None = None, captions: str = "train",
    language: str | None = None, **_: Any,
) -> Iterator[Item]:
    key = {"en": "enCap", "english": "enCap", "zh": "chCap", "chinese": "chCap"}.get((language or "en").lower())
    if key is None:
        raise AnnotationConversionError(f"--language {language!r}: VATEX has English (en) and Chinese (zh) captions.")
    finder = VideoFinder(data_root)
    seen: dict[str, str] = {}
    for where, raw in json_items(path):
        if isinstance(raw, Exception):
            yield failed(where, raw)
            continue
        try:
            if not isinstance(raw, dict) or not isinstance(raw.get("videoID"), str):
                raise ValueError('a VATEX record is an object with a "videoID" string')
            video_id = raw["videoID"]
            if video_id in seen:
                raise ValueError(f"video {video_id} is listed twice (first at {seen[video_id]})")
            seen[video_id] = where
            if not isinstance(raw.get(key), list):
                raise ValueError(f'no "{key}" list (the private test set has no captions)')
            kept, dropped = _clean(raw[key])
            if not kept:
                raise ValueError(f'"{key}" has no usable caption')
            video, window = _vatex_video(video_id, finder)
        except ValueError as err:
            yield failed(where, err)
            continue
        notes = ["videos with empty or repeated captions (left out)"] if dropped else []
        records = caption_records(video, kept, video_id, prompt or PROMPT, captions, window)
        yield Item(where, records=records, notes=notes)
