"""LongVideoBench (validation set): lvb_val.json, videos and subtitle JSON files."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from vidlab.conversation import MediaPart
from vidlab.errors import DataFileError, EvaluationError
from vidlab.evaluation.answers import LETTERS, letter_range, option_text_in, without_answer_word
from vidlab.evaluation.benchmarks.common import (
    Collector,
    choice_record,
    labels,
    question_text,
    read_json_lenient,
    require_file,
    require_folder,
)
from vidlab.evaluation.benchmarks.spec import Benchmark
from vidlab.evaluation.records import EvalSet
from vidlab.evaluation.subtitles import Cue, TimedSubtitles

INSTRUCTION = "Answer with the option's letter from the given choices directly."


def longvideobench_prompt(question: str, options: list[str]) -> str:
    """LongVideoBench's own prompt, as VideoLLaMA3 sends it: "Question: ...", "A. ..." lines, instruction."""
    lines = [f"Question: {question}", *(f"{LETTERS[i]}. {o}" for i, o in enumerate(options)), INSTRUCTION]
    return "\n".join(lines)


def read_longvideobench(response: str, options: Sequence[str]) -> str | None:
    """VideoLLaMA3's LongVideoBench reader: Video-MME's rule over the record's letter range (4 or 5 options),
    on the option texts as they are."""
    said = without_answer_word(response)
    found = re.findall(rf"[\(\ \[]*({letter_range(options)})[\)\.\ \]]*", said)
    if found:
        return found[0]
    index = option_text_in(said, options, digits_as_words=True)
    return None if index is None else LETTERS[index]


def _clock(value: str) -> float:
    hours, minutes, seconds = value.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def read_cues(path: Path, offset: float, duration: float) -> list[Cue]:
    """A LongVideoBench subtitle file: cues {"timestamp": [s, e], "text"} or {"start": "hh:mm:ss.xx",
    "end", "line"}, shifted back by the video's starting_timestamp_for_subtitles (an open end too, as the
    benchmark's loader does)."""
    data = read_json_lenient(path)
    if not isinstance(data, list):
        raise DataFileError(f"{path}: expected a JSON list of subtitle cues.")
    cues = []
    for cue in data:
        if not isinstance(cue, dict):
            continue
        try:
            if "timestamp" in cue:
                start, end = cue["timestamp"]
                # An open end (null) is the video's duration, as the benchmark's own loader reads it; that loader
                # also takes a whole-number end for open (it tests for float), which vidlab does not copy.
                end = end if isinstance(end, (int, float)) and not isinstance(end, bool) else duration
                text = cue.get("text", "")
            else:
                start, end, text = _clock(cue["start"]), _clock(cue["end"]), cue.get("line", "")
        except (KeyError, TypeError, ValueError) as err:
            raise DataFileError(f"{path}: a cue without readable times ({cue}).") from err
        cues.append(Cue(float(start) - offset, float(end) - offset, str(text)))
    return cues


def load(root: Path, split: str, subtitles: bool) -> EvalSet:
    path = require_file(root, ["lvb_val.json"], "LongVideoBench")
    require_folder(root, ("videos",), "LongVideoBench")
    if subtitles:
        require_folder(root, ("subtitles",), "LongVideoBench", "subtitle files")
    items = read_json_lenient(path)
    if not isinstance(items, list):
        raise EvaluationError(f"{path}: expected a JSON list of questions.")
    found = Collector()
    for number, item in enumerate(items, start=1):
        where = f"{path}#{number}"
        record_id = str(item.get("id")) if isinstance(item, dict) and item.get("id") else None

        def build(index: int, item=item, where=where, record_id=record_id, number=number):
            if not isinstance(item, dict) or not isinstance(item.get("video_path"), str):
                raise EvaluationError(f'{where}: a LongVideoBench question needs "id", "video_path", "question", '
                                      '"candidates" and "correct_choice".')
            options = item.get("candidates")
            if not isinstance(options, list) or len(options) < 2:
                raise EvaluationError(f'{where}: "candidates" must be a list of at least two answers.')
            choice = item.get("correct_choice")
            answer = LETTERS[choice] if isinstance(choice, int) and 0 <= choice < len(options) else None
            timed = None
            if subtitles:
                timed = TimedSubtitles(
                    read_cues(root / "subtitles" / str(item.get("subtitle_path")),
                              float(item.get("starting_timestamp_for_subtitles") or 0),
                              float(item.get("duration") or 0)),
                    rule="covering", intro="")
            return choice_record(
                record_id=record_id or f"lvb-{number}", where=where, index=index,
                media=[MediaPart(type="video", path=f"videos/{item['video_path']}")],
                prompt=longvideobench_prompt(question_text(item, where), [str(o) for o in options]),
                options=[str(o) for o in options], answer=answer,
                meta=labels(item, {"level": "level", "question_category": "question_category",
                                   "duration_group": "duration_group", "topic_category": "topic_category"}),
                subtitles=timed, scoring={"benchmark": "longvideobench", "reader": "longvideobench"},
            )

        found.add(where, record_id, build)
    return found.result(path, "longvideobench", root, split)


BENCHMARK = Benchmark(
    name="longvideobench",
    title="LongVideoBench",
    task="multiple choice",
    folder="longvideobench",
    download="https://huggingface.co/datasets/longvideobench/LongVideoBench (lvb_val.json, videos.tar.*, "
             "subtitles.tar)",
    layout="""longvideobench/
  lvb_val.json
  videos/<video_path>
  subtitles/<subtitle_path>       (JSON cue lists; for --subtitles)""",
    splits=("val",),
    load=load,
    groups=("level", "question_category", "duration_group"),
    subtitles=True,
    read_answer=read_longvideobench,
    notes=("VideoLLaMA3 always adds the subtitles, placed between the frames by time. vidlab's prompt is one "
           "video then text, so with --subtitles the same cues (each one a sampled frame falls inside) come "
           "in time order just before the question; without --subtitles there are none.",),
)
