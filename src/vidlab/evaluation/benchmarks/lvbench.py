"""LVBench: video_info.meta.jsonl (one video per line, its questions in "qa") and the YouTube videos."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from vidlab.conversation import MediaPart
from vidlab.errors import EvaluationError
from vidlab.evaluation.benchmarks.common import (
    Collector,
    answer_letter,
    choice_record,
    find_video,
    labels,
    question_text,
    require_file,
    require_folder,
)
from vidlab.evaluation.benchmarks.spec import Benchmark
from vidlab.evaluation.records import EvalSet
from vidlab.files import iter_json_items

INSTRUCTION = "\nAnswer with the option's letter from the given choices directly."
_OPTION_LINE_RE = re.compile(r"^\s*\(?([A-D])[\).]\s*(.*)$")


def read_lvbench(response: str, options: Sequence[str]) -> str | None:
    """VideoLLaMA3's LVBench reader: the first A-D standing as a word in the upper-cased answer ("a man" reads
    as A); none stops VideoLLaMA3's run, here it is unreadable."""
    found = re.findall(r"\b[A-D]\b", response.upper())
    return found[0] if found else None


def options_in(question: str, where: str) -> list[str]:
    """The option texts written into an LVBench question ("...?\\n(A) 1636\\n(B) 1366...")."""
    found = {}
    for line in question.split("\n")[1:]:
        match = _OPTION_LINE_RE.match(line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    letters = sorted(found)
    if len(letters) < 2 or letters != [chr(65 + i) for i in range(len(letters))]:
        raise EvaluationError(f"{where}: the question does not list its options as (A) ..., (B) ... lines.")
    return [found[letter] for letter in letters]


def _unreadable(entry, where: str):
    def build(index: int):
        if isinstance(entry, Exception):
            raise entry
        raise EvaluationError(f'{where}: a video line needs "key" and a "qa" list.')

    return build


def load(root: Path, split: str, subtitles: bool) -> EvalSet:
    path = require_file(root, ["video_info.meta.jsonl"], "LVBench",
                        "Download it from the Hugging Face dataset THUDM/LVBench.")
    folder = require_folder(root, ("video", "videos"), "LVBench")
    found = Collector()
    for line, entry in iter_json_items(path):
        where = f"{path}:{line}"
        if isinstance(entry, Exception) or not isinstance(entry, dict) or not isinstance(entry.get("qa"), list):
            found.add(where, None, _unreadable(entry, where))
            continue
        key = str(entry.get("key"))
        for number, qa in enumerate(entry["qa"], start=1):
            record_id = str(qa.get("uid")) if isinstance(qa, dict) and qa.get("uid") is not None else None

            def build(index: int, qa=qa, where=f"{where}/qa{number}", record_id=record_id, key=key):
                if not isinstance(qa, dict) or record_id is None:
                    raise EvaluationError(f'{where}: a question needs "uid", "question", "answer", "question_type".')
                question = question_text(qa, where)
                options = options_in(question, where)
                return choice_record(
                    record_id=record_id, where=where, index=index,
                    media=[MediaPart(type="video", path=find_video(root, folder, key))],
                    prompt=question + INSTRUCTION, options=options,
                    answer=answer_letter(qa.get("answer"), options, where),
                    meta=labels(qa, {"question_type": "question_type"}),
                    scoring={"benchmark": "lvbench", "reader": "lvbench"},
                )

            found.add(f"{where}/qa{number}", record_id, build)
    return found.result(path, "lvbench", root, split)


BENCHMARK = Benchmark(
    name="lvbench",
    title="LVBench",
    task="multiple choice",
    folder="lvbench",
    download="https://huggingface.co/datasets/THUDM/LVBench (video_info.meta.jsonl); the videos are YouTube "
             "videos named by each line's key (github.com/THUDM/LVBench scripts/download.sh)",
    layout="""lvbench/
  video_info.meta.jsonl           (one video per line: key, qa [uid, question, answer, question_type])
  video/<key>.mp4                 (or videos/)""",
    splits=("test",),
    load=load,
    groups=("question_type",),
    read_answer=read_lvbench,
    notes=("A question with several types counts in each of them; the overall accuracy counts it once, as "
           "LVBench's compute_accuracy does.",),
)
