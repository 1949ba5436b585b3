"""The general multiple-choice form: one question per record, vidlab's prompt and answer reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidlab.conversation import MediaPart
from vidlab.errors import EvaluationError
from vidlab.evaluation.benchmarks.common import (
    Collector,
    answer_letter,
    choice_record,
    clip_window,
    labels,
    lettered,
    options_list,
    question_text,
)
from vidlab.evaluation.records import BREAKDOWN_KEYS, EvalSet
from vidlab.evaluation.subtitles import benchmark_subtitles
from vidlab.files import iter_json_items

ANSWER_DIRECTLY = "Answer with the option's letter from the given choices directly."


def choice_prompt(question: str, options: list[str]) -> str:
    """The general multiple-choice prompt: question, lettered options, VideoLLaMA3's instruction."""
    return f"Question: {question}\nOptions:\n{lettered(options)}{ANSWER_DIRECTLY}"


def _media_parts(item: dict, where: str, start: float | None = None, end: float | None = None) -> list[MediaPart]:
    videos = item.get("video")
    images = item.get("image")
    videos = [videos] if isinstance(videos, str) else list(videos or [])
    images = [images] if isinstance(images, str) else list(images or [])
    if not all(isinstance(p, str) and p for p in [*videos, *images]):
        raise EvaluationError(f'{where}: "video" and "image" must be paths (strings or lists of strings).')
    return [MediaPart(type="video", path=p, start=start, end=end) for p in videos] + [
        MediaPart(type="image", path=p) for p in images
    ]


def _subtitles(item: dict, root: Path, where: str) -> Any:
    subtitles = item.get("subtitles")
    if isinstance(subtitles, str) and Path(subtitles).suffix.lower() in (".srt", ".vtt"):
        return benchmark_subtitles(root / subtitles)
    if subtitles is not None and not isinstance(subtitles, str):
        raise EvaluationError(f'{where}: "subtitles" must be text or the path of an .srt / .vtt file.')
    return subtitles


def load_choices(path: Path, data_root: Path | None = None) -> EvalSet:
    """The general multiple-choice form, one question per record (JSON list or JSONL):

    {"id": "q1", "video": "clips/a.mp4", "question": "What moves?", "options": ["a dog", "a cat"],
     "answer": "B", "subtitles": "text or subs/a.srt", "task": "...", "category": "...", "duration": "..."}
    """
    root = data_root or path.parent
    found = Collector()
    for line, item in iter_json_items(path):
        where = f"{path}:{line}"
        record_id = str(item["id"]) if isinstance(item, dict) and item.get("id") is not None else f"{path.name}:{line}"

        def build(index: int, item=item, where=where, record_id=record_id):
            if isinstance(item, Exception):
                raise item
            if not isinstance(item, dict):
                raise EvaluationError(f"{where}: a record must be a JSON object.")
            options = options_list(item.get("options"), where)
            return choice_record(
                record_id=record_id, where=where, index=index,
                media=_media_parts(item, where, *clip_window(item, where)),
                prompt=choice_prompt(question_text(item, where).strip(), options), options=options,
                answer=answer_letter(item.get("answer"), options, where),
                meta=labels(item, {k: k for k in BREAKDOWN_KEYS}), subtitles=_subtitles(item, root, where),
            )

        found.add(where, record_id, build)
    return found.result(path, "choice", root)
