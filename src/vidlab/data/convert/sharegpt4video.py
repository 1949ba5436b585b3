"""ShareGPT4Video (sharegpt4video_40k.jsonl on the Hugging Face hub, ShareGPT4Video/ShareGPT4Video).

One JSON object per line: {"video_id", "video_path", "zip_folder", "timestamp", "keyframe",
"captions": [{"idx": "0", "content": ...}, ..., {"idx": "-1", "content": <the whole video's caption>}]}.
The captions with idx 0, 1, ... describe what changes between consecutive keyframes; idx -1 is the
caption of the whole video, the one its paper trains video LLMs on. The converter makes one record
per video from that caption (or, with --captions eval, one record with it as the reference).
The video is `video_path` (relative to the unzipped zip_folder's parent), else `<video_id>.mp4`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vidlab.data.convert.common import Item, VideoFinder, caption_records, failed, json_items, text_of

PROMPT = "Describe this video in detail."


def _whole_caption(captions: Any) -> str:
    if not isinstance(captions, list):
        raise ValueError('no "captions" list')
    for entry in captions:
        if isinstance(entry, dict) and str(entry.get("idx")) == "-1":
            return text_of(entry.get("content"), 'the whole-video caption (idx -1) "content"').strip()
    raise ValueError('no whole-video caption (a "captions" entry with "idx": "-1")')


def _video(item: dict, finder: VideoFinder) -> str:
    video_id = text_of(item.get("video_id"), '"video_id"')
    path = item.get("video_path")
    if isinstance(path, str) and path.strip() and finder.exists(path):
        return path
    found = finder.find(video_id)
    if found is None:
        shown = f"{path} nor " if isinstance(path, str) and path.strip() else ""
        raise ValueError(f"neither {shown}any video named {video_id} is under the data root {finder.root}. "
                         "Unzip the zip_folder archives there")
    return found


def read(
    path: Path, data_root: Path | None = None, prompt: str | None = None, captions: str = "train", **_: Any
) -> Iterator[Item]:
    finder = VideoFinder(data_root)
    for where, raw in json_items(path):
        if isinstance(raw, Exception):
            yield failed(where, raw)
            continue
        try:
            if not isinstance(raw, dict):
                raise ValueError(f"a record must be a JSON object, got {type(raw).__name__}")
            caption = _whole_caption(raw.get("captions"))
            video = _video(raw, finder)
        except ValueError as err:
            yield failed(where, err)
            continue
        records = caption_records(video, [caption], str(raw["video_id"]), prompt or PROMPT, captions)
        if captions == "train":
            records[0]["id"] = str(raw["video_id"])  # one caption per video: no #n suffix
        yield Item(where, records=records)
