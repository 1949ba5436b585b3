"""ActivityNet-QA: open-ended questions (test_q.json + test_a.json) scored by match and by an LLM judge."""

from __future__ import annotations

from pathlib import Path

from vidlab.conversation import MediaPart
from vidlab.errors import EvaluationError
from vidlab.evaluation.benchmarks.common import (
    Collector,
    find_video,
    prompt_record,
    question_text,
    read_json_lenient,
    require_file,
    require_folder,
)
from vidlab.evaluation.benchmarks.spec import Benchmark
from vidlab.evaluation.records import EvalSet

# Question types of the release (its evaluation/eval.py); 3-8 are the "free" questions, named by answer type.
TYPES = {0: "Motion", 1: "Spatial Relation", 2: "Temporal Relation", 3: "Yes/No", 4: "Color", 5: "Object",
         6: "Location", 7: "Number", 8: "Other"}


def activitynet_prompt(question: str) -> str:
    """VideoLLaMA3's ActivityNet-QA prompt."""
    return f"Question: {question}\nPlease watch the video and answer the question clearly and concisely.\n"


def load(root: Path, split: str, subtitles: bool) -> EvalSet:
    questions_path = require_file(root, [f"{split}_q.json"], "ActivityNet-QA",
                                  "It is in github.com/MILVLG/activitynet-qa, dataset/.")
    answers_path = require_file(root, [f"{split}_a.json"], "ActivityNet-QA")
    folder = require_folder(root, (f"all_{split}", "videos"), "ActivityNet-QA")
    answers = {str(a.get("question_id")): a for a in read_json_lenient(answers_path) if isinstance(a, dict)}
    found = Collector()
    for number, item in enumerate(read_json_lenient(questions_path), start=1):
        where = f"{questions_path}#{number}"
        record_id = str(item.get("question_id")) if isinstance(item, dict) and item.get("question_id") else None

        def build(index: int, item=item, where=where, record_id=record_id):
            if record_id is None or not isinstance(item.get("video_name"), str):
                raise EvaluationError(f'{where}: a question needs "video_name", "question" and "question_id".')
            answer = answers.get(record_id)
            if answer is None or not str(answer.get("answer", "")).strip():
                raise EvaluationError(f"{where}: {record_id} has no answer in {answers_path.name}.")
            kind = TYPES.get(answer.get("type"), str(answer.get("type")))
            question = question_text(item, where)
            return prompt_record(
                record_id=record_id, where=where, index=index,
                media=[MediaPart(type="video", path=find_video(root, folder, f"v_{item['video_name']}"))],
                prompt=activitynet_prompt(question), references=[str(answer["answer"])],
                meta={"type": kind, "type_group": kind if answer.get("type") in (0, 1, 2) else "Free"},
                scoring={"benchmark": "activitynet_qa", "judge": "activitynet_qa", "question": question},
            )

        found.add(where, record_id, build)
    return found.result(questions_path, "activitynet_qa", root, split)


BENCHMARK = Benchmark(
    name="activitynet_qa",
    title="ActivityNet-QA",
    task="open-ended QA",
    folder="activitynet_qa",
    download="https://github.com/MILVLG/activitynet-qa (dataset/test_q.json, test_a.json); videos: ActivityNet "
             "v1.3 (http://activity-net.org/download.html)",
    layout="""activitynet_qa/
  test_q.json, test_a.json        (val_q.json, val_a.json for --split val)
  all_test/v_<video_name>.mp4     (or videos/)""",
    splits=("test", "val"),
    load=load,
    groups=("type_group", "type"),
    headline=("judge_accuracy", "judge_score", "exact_match", "strict_match"),
    notes=("Judge-free: strict_match is the release's own eval.py (the answer string equal to the reference); "
           "exact_match compares after lower-casing and removing punctuation and articles. The LLM judge "
           "(--judge-url) gives VideoLLaMA3's numbers: judge_accuracy (% judged yes) and judge_score (0-5).",),
)
