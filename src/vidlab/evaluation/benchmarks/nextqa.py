"""NExT-QA multiple choice: test.csv / val.csv, map_vid_vidorID.json and NExTVideo/."""

from __future__ import annotations

import csv
from pathlib import Path

from vidlab.conversation import MediaPart
from vidlab.errors import EvaluationError
from vidlab.evaluation.answers import LETTERS
from vidlab.evaluation.benchmarks.common import (
    Collector,
    choice_record,
    read_json_lenient,
    require_file,
    require_folder,
)
from vidlab.evaluation.benchmarks.mvbench import mvbench_prompt, read_mvbench
from vidlab.evaluation.benchmarks.spec import Benchmark
from vidlab.evaluation.records import EvalSet
from vidlab.files import TEXT_ENCODING

# Question types: VideoLLaMA3's three groups, and NExT-QA's own names (its eval_mc.py counts TP as TN).
GROUPS = {"DC": "Descriptive", "DL": "Descriptive", "DO": "Descriptive", "CH": "Causal", "CW": "Causal",
          "TC": "Temporal", "TP": "Temporal", "TN": "Temporal"}
TYPE_NAMES = {"CW": "Why", "CH": "How", "TN": "Bef&Aft", "TP": "Bef&Aft", "TC": "When", "DC": "Cnt", "DL": "Loc",
              "DO": "Other"}


def load(root: Path, split: str, subtitles: bool) -> EvalSet:
    path = require_file(root, [f"{split}.csv"], "NExT-QA", "It is in github.com/doc-doc/NExT-QA, dataset/nextqa/.")
    mapping_path = require_file(root, ["map_vid_vidorID.json"], "NExT-QA")
    require_folder(root, ("NExTVideo",), "NExT-QA")
    mapping = read_json_lenient(mapping_path)
    found = Collector()
    with open(path, newline="", encoding=TEXT_ENCODING) as handle:
        for row in csv.DictReader(handle):
            line = found.index + 2  # the header is line 1
            where = f"{path}:{line}"
            record_id = f"{row.get('video')}_{row.get('qid')}"

            def build(index: int, row=row, where=where, record_id=record_id):
                options = [row[f"a{i}"] for i in range(5) if row.get(f"a{i}") not in (None, "")]
                if len(options) < 2 or not row.get("question"):
                    raise EvaluationError(f"{where}: a NExT-QA row needs question and a0 ... a4.")
                video = mapping.get(str(row.get("video")))
                if not video:
                    raise EvaluationError(f"{where}: video {row.get('video')} is not in {mapping_path.name}.")
                try:
                    answer = LETTERS[int(row["answer"])]
                except (KeyError, ValueError, IndexError) as err:
                    raise EvaluationError(f"{where}: answer {row.get('answer')!r} is not an option index 0-4.") from err
                kind = str(row.get("type", ""))
                return choice_record(
                    record_id=record_id, where=where, index=index,
                    media=[MediaPart(type="video", path=f"NExTVideo/{video}.mp4")],
                    prompt=mvbench_prompt(row["question"], options), options=options, answer=answer,
                    meta={k: v for k, v in (("group", GROUPS.get(kind)), ("type", TYPE_NAMES.get(kind))) if v},
                    scoring={"benchmark": "nextqa", "reader": "mvbench"},
                )

            found.add(where, record_id, build)
    return found.result(path, "nextqa", root, split)


BENCHMARK = Benchmark(
    name="nextqa",
    title="NExT-QA",
    task="multiple choice",
    folder="nextqa",
    download="https://github.com/doc-doc/NExT-QA (dataset/nextqa/test.csv, val.csv, map_vid_vidorID.json); "
             "videos: NExTVideo from the link in its README",
    layout="""nextqa/
  test.csv                        (val.csv for --split val)
  map_vid_vidorID.json
  NExTVideo/<folder>/<video>.mp4""",
    splits=("test", "val"),
    load=load,
    groups=("group", "type"),
    read_answer=read_mvbench,
)
