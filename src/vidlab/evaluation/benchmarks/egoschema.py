"""EgoSchema: questions.json, answers public for a 500-question subset; the rest is scored by its server."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from vidlab.conversation import MediaPart
from vidlab.errors import EvaluationError
from vidlab.evaluation.answers import LETTERS, first_letter_match, option_text_in, without_answer_word
from vidlab.evaluation.benchmarks.common import (
    Collector,
    choice_record,
    find_video,
    layout_error,
    lettered,
    question_text,
    read_json_lenient,
    require_file,
    require_folder,
)
from vidlab.evaluation.benchmarks.spec import Benchmark
from vidlab.evaluation.records import EvalSet
from vidlab.files import write_atomic, write_json

VIDEO_FOLDERS = ("good_clips_git", "videos")  # the Google Drive zip's folder, then download.py's
INSTRUCTION = (
    "Answer with the option's letter from the given choices directly and only give the best option. "
    "The best answer is: "
)


def egoschema_prompt(question: str, options: list[str]) -> str:
    """VideoLLaMA3's EgoSchema prompt (it ends with a space)."""
    return (f"Select the best answer to the following multiple-choice question based on the video.\n{question}\n"
            f"Options:\n{lettered(options)}{INSTRUCTION}")


def read_egoschema(response: str, options: Sequence[str]) -> str | None:
    """VideoLLaMA3's EgoSchema reader: the first A-E, optionally in "(" ")" or spaces; else the first option
    whose text the answer holds."""
    said = without_answer_word(response)
    letter = first_letter_match(r"[\(\ ]*[A-E][\)\ ]*", said, LETTERS[:5])
    if letter:
        return letter
    index = option_text_in(said, options)
    return None if index is None else LETTERS[index]


def load(root: Path, split: str, subtitles: bool) -> EvalSet:
    """split "full": all 5,031 questions (accuracy over the 500 whose answers are public, plus the
    submission file); "subset": only those 500."""
    path = require_file(root, ["questions.json"], "EgoSchema", "Get it from github.com/egoschema/EgoSchema.")
    answers_path = root / "subset_answers.json"
    if split == "subset" and not answers_path.is_file():
        raise layout_error(root, "EgoSchema", f"{answers_path} for the subset split",
                           "It is in github.com/egoschema/EgoSchema beside questions.json.")
    answers = read_json_lenient(answers_path) if answers_path.is_file() else {}
    folder = require_folder(root, VIDEO_FOLDERS, "EgoSchema")
    questions = read_json_lenient(path)
    if not isinstance(questions, list):
        raise EvaluationError(f"{path}: expected a JSON list of questions (q_uid, question, option 0 ... option 4).")
    found = Collector()
    for number, item in enumerate(questions, start=1):
        where = f"{path}#{number}"
        q_uid = str(item.get("q_uid")) if isinstance(item, dict) and item.get("q_uid") else None
        if split == "subset" and q_uid not in answers:
            continue

        def build(index: int, item=item, where=where, q_uid=q_uid):
            if not q_uid:
                raise EvaluationError(f'{where}: the question has no "q_uid".')
            options = [item.get(f"option {i}") for i in range(5)]
            if not all(isinstance(o, str) for o in options):
                raise EvaluationError(f'{where}: an EgoSchema question needs "option 0" ... "option 4".')
            known = answers.get(q_uid)
            answer = LETTERS[known] if isinstance(known, int) and 0 <= known < 5 else None
            return choice_record(
                record_id=q_uid, where=where, index=index,
                media=[MediaPart(type="video", path=find_video(root, folder, q_uid))],
                prompt=egoschema_prompt(question_text(item, where), options), options=options, answer=answer,
                meta={}, scoring={"benchmark": "egoschema", "reader": "egoschema"},
            )

        found.add(where, q_uid, build)
    return found.result(path, "egoschema", root, split)


def write_submission(rows: list[dict], folder: Path) -> list[Path]:
    """submission.json ({q_uid: option index}, for its validation server) and submission.csv (q_uid,answer,
    for its Kaggle competition). An unreadable answer is written as -1 (wrong), and listed in the metrics."""
    chosen = {}
    for row in rows:
        letter = (row.get("scores") or {}).get("choice")
        chosen[str(row["id"])] = LETTERS.index(letter) if letter else -1
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["q_uid", "answer"])
    writer.writerows(chosen.items())
    return [write_json(folder / "submission.json", chosen), write_atomic(folder / "submission.csv", table.getvalue())]


BENCHMARK = Benchmark(
    name="egoschema",
    title="EgoSchema",
    task="multiple choice",
    folder="egoschema",
    download="https://github.com/egoschema/EgoSchema (questions.json, subset_answers.json; videos from its "
             "Google Drive zip or download.py)",
    layout="""egoschema/
  questions.json
  subset_answers.json               (the 500 public answers; accuracy is over these)
  good_clips_git/<q_uid>.mp4        (or videos/)""",
    splits=("full", "subset"),
    load=load,
    submission=write_submission,
    read_answer=read_egoschema,
    notes=("The answers to 4,531 of the 5,031 questions are private: vidlab scores the public 500 and writes "
           "submission.json / submission.csv for the full set. Send it with "
           "`curl -X POST -H 'Content-Type: application/json' -d @submission.json "
           "https://validation-server.onrender.com/api/upload/` or submit the CSV to the Kaggle competition "
           "egoschema-public.",),
)
