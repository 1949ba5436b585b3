"""PerceptionTest multiple-choice video QA: answers public for the valid split, the test split is scored
by its eval.ai server."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vidlab.conversation import MediaPart
from vidlab.errors import EvaluationError
from vidlab.evaluation.answers import LETTERS, first_letter_match, letter_range, without_answer_word
from vidlab.evaluation.benchmarks.common import (
    MVBENCH_INSTRUCTION,
    Collector,
    choice_record,
    find_video,
    labels,
    lettered,
    question_text,
    read_json_lenient,
    require_file,
    require_folder,
)
from vidlab.evaluation.benchmarks.spec import Benchmark
from vidlab.evaluation.records import EvalSet
from vidlab.files import write_json

FILES = {"test": "mc_question_test.json", "valid": "mc_question_valid.json"}


def perception_prompt(question: str, options: list[str]) -> str:
    """VideoLLaMA3's PerceptionTest prompt."""
    return f"Question: {question}\nOptions:\n{lettered(options)}{MVBENCH_INSTRUCTION}"


def read_perception_test(response: str, options: Sequence[str]) -> str | None:
    """VideoLLaMA3's PerceptionTest reader: the first A-C, optionally in brackets; else the answer being exactly
    one option's text, ignoring case (VideoLLaMA3's code means this but refers to an undefined name)."""
    said = without_answer_word(response)
    letter = first_letter_match(rf"\(*{letter_range(options)}\)*", said, LETTERS[: len(options)])
    if letter:
        return letter
    lowered = [option.lower() for option in options]
    return LETTERS[lowered.index(said.lower())] if said.lower() in lowered else None


def load(root: Path, split: str, subtitles: bool) -> EvalSet:
    path = require_file(root, [FILES[split]], "PerceptionTest",
                        f"Unpack mc_question_{split}_annotations.zip of the release there.")
    folder = require_folder(root, ("videos", f"{split}_videos"), "PerceptionTest")
    data = read_json_lenient(path)
    if not isinstance(data, dict):
        raise EvaluationError(f"{path}: expected an object keyed by video id, each with metadata and mc_question.")
    found = Collector()
    for key, entry in data.items():
        where = f"{path}#{key}"
        questions = entry.get("mc_question") if isinstance(entry, dict) else None
        video_id = str((entry.get("metadata") or {}).get("video_id") or key) if isinstance(entry, dict) else key
        for number, item in enumerate(questions or [None], start=1):
            record_id = f"{video_id}_{item.get('id')}" if isinstance(item, dict) else f"{video_id}#{number}"

            def build(index: int, item=item, where=f"{where}/{number}", video_id=video_id, record_id=record_id):
                if not isinstance(item, dict):
                    raise EvaluationError(f'{where}: the video has no "mc_question" list.')
                options = item.get("options")
                if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) for o in options):
                    raise EvaluationError(f'{where}: "options" must be a list of the option texts.')
                answer_id = item.get("answer_id")
                answer = LETTERS[answer_id] if isinstance(answer_id, int) and 0 <= answer_id < len(options) else None
                return choice_record(
                    record_id=record_id, where=where, index=index,
                    media=[MediaPart(type="video", path=find_video(root, folder, video_id))],
                    prompt=perception_prompt(question_text(item, where), options), options=options, answer=answer,
                    meta=labels(item, {"area": "area", "reasoning": "reasoning", "tag": "tag"}),
                    scoring={"benchmark": "perception_test", "reader": "perception_test", "video_id": video_id,
                             "question_id": item.get("id")},
                )

            found.add(where, record_id, build)
    return found.result(path, "perception_test", root, split)


def write_submission(rows: list[dict], folder: Path) -> list[Path]:
    """submission.json for the eval.ai challenge: {video_id: [{"id", "answer_id", "answer"}]}. An unreadable
    answer is written as answer_id -1 (wrong), and listed in the metrics."""
    submission: dict[str, list[dict]] = {}
    for row in rows:
        scoring = row.get("scoring") or {}
        letter = (row.get("scores") or {}).get("choice")
        answer_id = LETTERS.index(letter) if letter else -1
        submission.setdefault(str(scoring.get("video_id")), []).append(
            {"id": scoring.get("question_id"), "answer_id": answer_id,
             "answer": row["options"][answer_id] if answer_id >= 0 else ""})
    return [write_json(folder / "submission.json", submission)]


BENCHMARK = Benchmark(
    name="perception_test",
    title="PerceptionTest",
    task="multiple choice",
    folder="perception_test",
    download="https://github.com/google-deepmind/perception_test (test/valid videos and "
             "mc_question_*_annotations.zip)",
    layout="""perception_test/
  mc_question_test.json           (split test; mc_question_valid.json for --split valid)
  videos/<video_id>.mp4""",
    splits=("test", "valid"),
    load=load,
    groups=("area", "reasoning", "tag"),
    submission=write_submission,
    read_answer=read_perception_test,
    notes=("The test split's answers are private: its accuracy comes from the eval.ai challenge (upload "
           "submission.json); the valid split is scored here, per area, reasoning type and tag.",),
)
