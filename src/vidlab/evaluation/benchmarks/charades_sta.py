"""Charades-STA temporal grounding: the public charades_sta_test.txt or VideoLLaMA3's prepared JSON."""

from __future__ import annotations

import re
from pathlib import Path

from vidlab.conversation import MediaPart
from vidlab.errors import EvaluationError
from vidlab.evaluation.benchmarks.common import (
    Collector,
    find_video,
    first_existing,
    layout_error,
    prompt_record,
    read_json_lenient,
    require_folder,
)
from vidlab.evaluation.benchmarks.spec import Benchmark
from vidlab.evaluation.records import EvalSet
from vidlab.files import TEXT_ENCODING

RELEASE = "charades_sta_test.txt"
VIDEOLLAMA3_FILE = "charades_annotations_test-random_prompt.json"
VIDEO_FOLDERS = ("Charades_v1", "Charades_v1_480", "videos")
# VideoLLaMA3 appends this to each question, with no space between.
SUFFIX = "Please output the start and end timestamps in seconds."
# The public release gives only the sentence; VideoLLaMA3's own question wordings are in a file it did not publish.
QUESTION = 'When does "{sentence}" happen in the video? '
_LINE_RE = re.compile(r"^(\S+)\s+([\d.]+)\s+([\d.]+)##(.*)$")


def grounding_prompt(question: str) -> str:
    return f"{question}{SUFFIX}"


def _grounding_record(index: int, record_id: str, where: str, root: Path, folder: str, video: str, question: str,
                      start: float, end: float):
    if not (0 <= start <= end):
        raise EvaluationError(f"{where}: the moment {start}-{end} s is not a start and end in seconds.")
    return prompt_record(
        record_id=record_id, where=where, index=index,
        media=[MediaPart(type="video", path=find_video(root, folder, Path(video).stem))],
        prompt=grounding_prompt(question), references=[f"{start:g} - {end:g}"],
        scoring={"benchmark": "charades_sta", "kind": "grounding", "interval": [start, end]},
    )


def _from_release(path: Path, root: Path, folder: str, found: Collector) -> None:
    for line, text in enumerate(path.read_text(encoding=TEXT_ENCODING).splitlines(), start=1):
        if not text.strip():
            continue
        where = f"{path}:{line}"
        match = _LINE_RE.match(text.strip())

        def build(index: int, match=match, where=where, line=line):
            if match is None:
                raise EvaluationError(f"{where}: expected 'VIDEO START END##sentence'.")
            video, start, end, sentence = match.groups()
            return _grounding_record(index, f"{video}#{line}", where, root, folder, video,
                                     QUESTION.format(sentence=sentence.strip().rstrip(".")), float(start), float(end))

        found.add(where, None, build)


def _from_videollama3(path: Path, root: Path, folder: str, found: Collector) -> None:
    items = read_json_lenient(path)
    for number, item in enumerate(items if isinstance(items, list) else [], start=1):
        where = f"{path}#{number}"
        record_id = str(item.get("question_id")) if isinstance(item, dict) else None

        def build(index: int, item=item, where=where, record_id=record_id, number=number):
            try:
                question = item["conversation"][0]["content"].replace("<video>", "").lstrip("\n")
                start, end = (float(t) for t in item["timestamps"][0])
                video = str(item["video"])
            except (KeyError, IndexError, TypeError, ValueError) as err:
                raise EvaluationError(f'{where}: expected "question_id", "video", "conversation"[0]["content"] and '
                                      '"timestamps"[0] = [start, end].') from err
            return _grounding_record(index, record_id or f"q{number}", where, root, folder, Path(video).name,
                                     question, start, end)

        found.add(where, record_id, build)


def load(root: Path, split: str, subtitles: bool) -> EvalSet:
    path = first_existing(root, [VIDEOLLAMA3_FILE, RELEASE])
    if path is None:
        raise layout_error(root, "Charades-STA", f"{root / RELEASE} (the public release) or {root / VIDEOLLAMA3_FILE}")
    folder = require_folder(root, VIDEO_FOLDERS, "Charades-STA")
    found = Collector()
    (_from_videollama3 if path.name == VIDEOLLAMA3_FILE else _from_release)(path, root, folder, found)
    return found.result(path, "charades_sta", root, split)


BENCHMARK = Benchmark(
    name="charades_sta",
    title="Charades-STA",
    task="temporal grounding",
    folder="charades",
    download="https://github.com/jiyanggao/TALL (charades_sta_test.txt); videos: Charades_v1_480.zip from "
             "https://prior.allenai.org/projects/charades",
    layout="""charades/
  charades_sta_test.txt           (VIDEO START END##sentence; or VideoLLaMA3's
                                   charades_annotations_test-random_prompt.json)
  Charades_v1/<VIDEO>.mp4         (or Charades_v1_480/ as the Charades zip unpacks, or videos/)""",
    splits=("test",),
    load=load,
    headline=("miou", "r1@0.3", "r1@0.5", "r1@0.7"),
    notes=(f'From the public release each question is: When does "<sentence>" happen in the video? {SUFFIX} '
           "VideoLLaMA3 used its own question wordings, from a file it did not publish; give that file instead "
           "of charades_sta_test.txt to ask its questions.",),
)
