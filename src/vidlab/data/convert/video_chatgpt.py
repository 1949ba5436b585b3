"""Video-ChatGPT (mbzuai-oryx/Video-ChatGPT) question-answer files.

- The 100K instruction set (VideoInstruct100K.json): a JSON list of {"q", "a", "video_id"}, where
  video_id is an ActivityNet id such as "v_k_ZXmr8pmrs" and the video is that id's file
  (.mp4, .mkv or .webm in ActivityNet's downloads).
- Its evaluation files (generic / temporal QA): {"video_name", "Q", "A"}; consistency QA asks the
  same thing twice in other words: {"video_name", "Q1", "Q2", "A"}, one record per question, both
  with the answer.
- The training json its own script writes ({"id", "video": "<id>.pkl", "conversations"}): the .pkl
  names CLIP features, so the converter looks for the video with the same name.
One record per question; its id is the video id and the question's number for that video.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vidlab.data.convert import llava
from vidlab.data.convert.common import Item, MediaMissing, VideoFinder, failed, json_items, text_of

_KEYS = {"question": ("q", "Q", "question"), "answer": ("a", "A", "answer"), "video": ("video_id", "video_name")}


def _field(item: dict, name: str) -> Any:
    for key in _KEYS[name]:
        if key in item:
            return item[key]
    raise ValueError(f"no {name} (expected one of: {', '.join(_KEYS[name])})")


def _video_id(value: Any) -> str:
    text = text_of(value, "the video id")
    stem, dot, suffix = text.rpartition(".")
    return stem if dot and suffix.lower() in ("mp4", "mkv", "webm", "avi", "pkl") else text


def _training_format(item: dict, finder: VideoFinder) -> tuple[dict, str | None]:
    video_id = _video_id(item.get("video"))
    video = finder.find(video_id)
    if video is None:
        raise MediaMissing(finder.missing(video_id))
    return llava.convert_item({**item, "video": video})


def read(path: Path, data_root: Path | None = None, **_: Any) -> Iterator[Item]:
    finder = VideoFinder(data_root)
    per_video: Counter = Counter()
    for where, raw in json_items(path):
        if isinstance(raw, Exception):
            yield failed(where, raw)
            continue
        try:
            if not isinstance(raw, dict):
                raise ValueError(f"a record must be a JSON object, got {type(raw).__name__}")
            if "conversations" in raw:
                record, note = _training_format(raw, finder)
                yield Item(where, records=[record], notes=[note] if note else [])
                continue
            video_id = _video_id(_field(raw, "video"))
            if "Q1" in raw or "Q2" in raw:  # consistency QA: two wordings of one question
                questions = [text_of(raw.get(key), f'"{key}"').strip() for key in ("Q1", "Q2")]
            else:
                questions = [text_of(_field(raw, "question"), "the question").strip()]
            answer = text_of(_field(raw, "answer"), "the answer").strip()
            video = finder.find(video_id)
            if video is None:
                raise MediaMissing(finder.missing(video_id))
        except ValueError as err:
            yield failed(where, err)
            continue
        records = []
        for question in questions:
            per_video[video_id] += 1
            records.append({
                "id": f"{video_id}#{per_video[video_id]}",
                "video": [video],
                "conversations": [{"from": "human", "value": f"<video>\n{question}"},
                                  {"from": "gpt", "value": answer}],
            })
        yield Item(where, records=records)
