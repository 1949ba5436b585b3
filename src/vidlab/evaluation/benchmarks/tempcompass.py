"""TempCompass: four question formats over the same videos, each scored by its own rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidlab.conversation import MediaPart
from vidlab.errors import EvaluationError
from vidlab.evaluation.answers import read_tempcompass, tempcompass_target
from vidlab.evaluation.benchmarks.common import (
    Collector,
    find_video,
    first_existing,
    layout_error,
    parquet_rows,
    prompt_record,
    question_text,
    read_json_lenient,
    require_folder,
)
from vidlab.evaluation.benchmarks.spec import Benchmark
from vidlab.evaluation.records import EvalSet

FORMATS = ("multi-choice", "yes_no", "caption_matching", "captioning")
PARQUET = "test-00000-of-00001.parquet"
# VideoLLaMA3's instruction after "Question: {question}\n", per format.
INSTRUCTIONS = {
    "multi-choice": "Please answer with the option's letter from the given choices directly and only give the best "
                    "option.",
    "yes_no": "Please answer with 'yes' or 'no' directly.",
    "caption_matching": "Please directly give the best option:",
    "captioning": "Please answer with the caption directly.",
}


def tempcompass_prompt(question: str, task_format: str) -> str:
    if task_format == "captioning":
        question = question.replace("Generated Caption:", "").strip()
    return f"Question: {question}\n{INSTRUCTIONS[task_format]}"


def _questions(root: Path, task_format: str) -> list[tuple[str, dict[str, Any]]]:
    """(where, {video_id, dim, question, answer}) from the Hugging Face parquet or the GitHub question file."""
    parquet = root / task_format / PARQUET
    if parquet.is_file():
        return parquet_rows(parquet)
    path = root / "questions" / f"{task_format}.json"
    data = read_json_lenient(path)
    if not isinstance(data, dict):
        raise EvaluationError(f"{path}: expected {{video_id: {{dimension: [{{question, answer}}]}}}}.")
    rows = []
    for video_id, dims in data.items():
        for dim, questions in (dims or {}).items():
            for number, item in enumerate(questions or [], start=1):
                rows.append((f"{path}#{video_id}/{dim}/{number}", {**item, "video_id": video_id, "dim": dim}))
    return rows


def read_match(response: str, row: dict) -> tuple[bool, bool]:
    scoring = row.get("scoring") or {}
    return read_tempcompass(response, scoring.get("format", ""), scoring["target"])


def load(root: Path, split: str, subtitles: bool) -> EvalSet:
    formats = FORMATS if split == "all" else (split,)
    for task_format in formats:
        if first_existing(root, [f"{task_format}/{PARQUET}", f"questions/{task_format}.json"]) is None:
            raise layout_error(root, "TempCompass", f"{root / task_format / PARQUET} (Hugging Face release) or "
                               f"{root / 'questions' / (task_format + '.json')} (GitHub release)")
    folder = require_folder(root, ("videos",), "TempCompass")
    found = Collector()
    for task_format in formats:
        counts: dict[str, int] = {}
        for where, item in _questions(root, task_format):
            video_id, dim = str(item.get("video_id")), str(item.get("dim"))
            counts[f"{video_id}/{dim}"] = counts.get(f"{video_id}/{dim}", 0) + 1
            record_id = f"{task_format}/{video_id}/{dim}/{counts[f'{video_id}/{dim}']}"

            def build(index: int, item=item, where=where, record_id=record_id, task_format=task_format,
                      video_id=video_id, dim=dim):
                question = question_text(item, where)
                answer = item.get("answer")
                if not isinstance(answer, str) or not answer.strip():
                    raise EvaluationError(f'{where}: the question has no "answer".')
                scoring = {"benchmark": "tempcompass", "format": task_format,
                           "target": tempcompass_target(answer, task_format), "kind": "match"}
                if task_format == "captioning":
                    scoring.update(kind="judged", judge="tempcompass_captioning",
                                   question=question.replace("\nGenerated Caption:", "").strip())
                return prompt_record(
                    record_id=record_id, where=where, index=index,
                    media=[MediaPart(type="video", path=find_video(root, folder, video_id))],
                    prompt=tempcompass_prompt(question, task_format), references=[answer],
                    meta={"format": task_format, "dim": dim, "format_dim": f"{task_format} / {dim}"},
                    scoring=scoring,
                )

            found.add(where, record_id, build)
    return found.result(root, "tempcompass", root, split)


BENCHMARK = Benchmark(
    name="tempcompass",
    title="TempCompass",
    task="multiple choice, yes/no, caption matching, captioning (judged)",
    folder="tempcompass",
    download="https://huggingface.co/datasets/lmms-lab/TempCompass (one parquet per format, videos.zip); or "
             "https://github.com/llyx97/TempCompass (questions/<format>.json) with its videos",
    layout="""tempcompass/
  multi-choice/test-00000-of-00001.parquet        (or questions/multi-choice.json)
  yes_no/test-00000-of-00001.parquet              (or questions/yes_no.json)
  caption_matching/test-00000-of-00001.parquet    (or questions/caption_matching.json)
  captioning/test-00000-of-00001.parquet          (or questions/captioning.json)
  videos/<video_id>.mp4""",
    splits=("all", *FORMATS),
    load=load,
    groups=("format", "dim", "format_dim"),
    read_match=read_match,
    notes=("Rules as VideoLLaMA3 scores them: an answer is right when it starts with the expected letter "
           "(multi-choice), yes/no word (yes_no, which must contain yes or no to be readable) or caption label "
           "(caption_matching). Captioning answers are read by an LLM judge (--judge-url) that picks the option "
           "the caption describes; without a judge they are left out of the accuracy, and the note says so.",),
)
