"""Video-MME: the released parquet (or its rows as JSON), with and without subtitles, as VideoLLaMA3 asks it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vidlab.conversation import MediaPart
from vidlab.errors import EvaluationError
from vidlab.evaluation.answers import LETTERS, option_text_in, without_answer_word
from vidlab.evaluation.benchmarks.common import (
    Collector,
    answer_letter,
    choice_record,
    find_video,
    first_existing,
    json_items,
    layout_error,
    options_list,
    parquet_rows,
    question_text,
    require_folder,
)
from vidlab.evaluation.benchmarks.spec import Benchmark, DataFormat
from vidlab.evaluation.records import EvalSet
from vidlab.evaluation.subtitles import TimedSubtitles, benchmark_subtitles

PARQUET = "test-00000-of-00001.parquet"
VIDEO_FOLDERS = ("videos", "data")  # VideoLLaMA3's name, then the one the Hugging Face zips unpack to
SUBTITLE_FOLDERS = ("subtitles", "subtitle")
HEAD = (
    "Select the best answer to the following multiple-choice question based on the video. "
    "Respond with only the letter (A, B, C, or D) of the correct option.\n"
)
TAIL = (
    "Answer with the option's letter from the given choices directly and only give the best option. "
    "The best answer is:"
)
# Keys of the June-2024 full file / result template -> today's names.
_OLD_KEYS = {"duration_category": "duration", "video_category": "domain", "video_subcategory": "sub_category",
             "choices": "options"}


VIDEOMME_COLUMNS = ("videoID", "question_id", "options", "answer")


def videomme_prompt(question: str, options: list[str]) -> str:
    """VideoLLaMA3's Video-MME prompt: the question and the options as released ("A. ..."), as they are."""
    return f"{HEAD}{question}\n" + "".join(f"{option}\n" for option in options) + TAIL


def released_options(value: Any, where: str) -> tuple[list[str], list[str]]:
    """(the options as the prompt shows them, "A. Apples."; their texts, "Apples."). Rows of older forms
    without the "A. " are shown with it, as the release writes it."""
    given = options_list(value, where, as_given=True)
    prefixes = [f"{LETTERS[i]}. " for i in range(len(given))]
    if all(option.startswith(prefix) for option, prefix in zip(given, prefixes)):
        return given, [option[len(prefix):] for option, prefix in zip(given, prefixes)]
    texts = options_list(value, where)
    return [f"{prefix}{text}" for prefix, text in zip(prefixes, texts)], texts


def read_videomme(response: str, options: Sequence[str]) -> str | None:
    """VideoLLaMA3's Video-MME reader: the first A-D (optionally in (), [] or followed by "." or a space)
    anywhere; else the first option whose text, or digit as a word, the answer holds. It takes an option's
    text from the released "A. Apples." with `[A-D]\\. (.*).`, which drops the last character ("Apples"),
    and would leave nothing of a one-character option ("A. 3"), which would then occur in every answer: there,
    and where the pattern finds nothing (the original stops), the whole text is used (docs/fidelity.md)."""
    texts = []
    for letter, text in zip(LETTERS, options):
        found = re.findall(r"[A-D]\. (.*).", f"{letter}. {text}")
        texts.append(found[0] if found and found[0] else text)
    said = without_answer_word(response)
    found = re.findall(r"[\(\ \[]*([A-D])[\)\.\ \]]*", said)
    if found:
        return found[0]
    index = option_text_in(said, texts, digits_as_words=True)
    return None if index is None else LETTERS[index]


def _detect(path: Path, first: dict[str, Any] | None) -> bool:
    if first is None or path.is_dir():
        return False
    return "questions" in first or ("question_id" in first and ("videoID" in first or "duration" in first))


def _rows(path: Path) -> list[tuple[str, Any]]:
    """(where, question row) from the parquet, JSON/JSONL rows, or per-video groups with a "questions" list."""
    if path.suffix.lower() == ".parquet":
        return parquet_rows(path)
    rows = []
    for where, item in json_items(path):
        if isinstance(item, dict) and isinstance(item.get("questions"), list):
            group = {k: v for k, v in item.items() if k != "questions"}
            rows.extend((where, {**group, **q} if isinstance(q, dict) else q) for q in item["questions"])
        else:
            rows.append((where, item))
    return rows


def _subtitles(root: Path, video_key: str) -> TimedSubtitles:
    found = first_existing(root, [f"{folder}/{video_key}.srt" for folder in SUBTITLE_FOLDERS])
    # A video without a subtitle file still gets the (empty) subtitle block, as in VideoLLaMA3's prompt.
    return TimedSubtitles(benchmark_subtitles(found) if found else [])


def load_videomme(path: Path, data_root: Path | None = None, subtitles: bool = False) -> EvalSet:
    """Video-MME as released (test-00000-of-00001.parquet, the same rows as JSON/JSONL, or per-video
    objects with a "questions" list, old key names and trailing commas accepted). Videos are
    `videos/<videoID>.<ext>` or `data/<videoID>.<ext>` under the data root (default: the file's folder);
    with `subtitles=True`, `subtitles/<videoID>.srt` (or `subtitle/`) cues at the sampled frames.
    """
    root = data_root or path.parent
    found = Collector()
    for where, item in _rows(path):
        video_key = item.get("videoID") or item.get("video_id") if isinstance(item, dict) else None
        record_id = str(item.get("question_id") or f"{video_key}-{found.index + 1}") if isinstance(item, dict) else None

        def build(index: int, item=item, where=where, video_key=video_key, record_id=record_id):
            if isinstance(item, Exception):
                raise item
            if not isinstance(item, dict):
                raise EvaluationError(f"{where}: a record must be a JSON object.")
            item = {_OLD_KEYS.get(k, k): v for k, v in item.items()}
            if not video_key:
                raise EvaluationError(f'{where}: the record has no "videoID". Video-MME rows name their video.')
            shown, options = released_options(item.get("options"), where)
            meta = {key: str(item[name]) for key, name in (("task", "task_type"), ("category", "domain"),
                                                           ("sub_category", "sub_category"), ("duration", "duration"))
                    if item.get(name) not in (None, "")}
            return choice_record(
                record_id=record_id, where=where, index=index,
                media=[MediaPart(type="video", path=find_video(root, VIDEO_FOLDERS, str(video_key)))],
                prompt=videomme_prompt(question_text(item, where), shown), options=options,
                answer=answer_letter(item.get("answer"), options, where), meta=meta,
                subtitles=_subtitles(root, str(video_key)) if subtitles else None,
                scoring={"benchmark": "videomme", "reader": "videomme"},
            )

        found.add(where, record_id, build)
    return found.result(path, "videomme", root, "test")


def load(root: Path, split: str, subtitles: bool) -> EvalSet:
    path = first_existing(root, [PARQUET, f"videomme/{PARQUET}"])
    if path is None:
        raise layout_error(root, "Video-MME", f"{root / PARQUET} (the Hugging Face release keeps it in videomme/)",
                           "Download it, the videos and subtitles from the Hugging Face dataset lmms-lab/Video-MME.")
    require_folder(root, VIDEO_FOLDERS, "Video-MME")
    if subtitles and first_existing(root, SUBTITLE_FOLDERS) is None:
        raise layout_error(root, "Video-MME", "a subtitles/ (or subtitle/) folder for --subtitles",
                           "Unpack subtitle.zip of the release there.")
    return load_videomme(path, root, subtitles)


BENCHMARK = Benchmark(
    name="videomme",
    title="Video-MME",
    task="multiple choice",
    folder="videomme",
    download="https://huggingface.co/datasets/lmms-lab/Video-MME (videomme/test-00000-of-00001.parquet, "
             "videos_chunked_*.zip, subtitle.zip); https://video-mme.github.io",
    layout="""videomme/
  test-00000-of-00001.parquet     (or videomme/test-00000-of-00001.parquet)
  videos/<videoID>.mp4            (or data/, as the release's zips unpack)
  subtitles/<videoID>.srt         (or subtitle/; for --subtitles)""",
    splits=("test",),
    load=load,
    groups=("duration", "category", "sub_category", "task"),
    subtitles=True,
    read_answer=read_videomme,
    data_format=DataFormat(name="videomme", read=lambda path, root, subtitles: load_videomme(path, root, subtitles),
                           detect=_detect, columns=VIDEOMME_COLUMNS),
    notes=(
        "Asked once per run: without subtitles, or with --subtitles (VideoLLaMA3 asks both and reports two "
        "tables; run twice, or --benchmark all, which does both).",
        "Accuracy also per duration, domain (category) and sub-category, as the official scorer reports; "
        "VideoLLaMA3's table has only task types.",
    ),
)
