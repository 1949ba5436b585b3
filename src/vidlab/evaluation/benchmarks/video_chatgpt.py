"""The Video-ChatGPT generative benchmark: 500 ActivityNet videos, free answers judged by an LLM on correctness,
detail, context (generic_qa.json), temporal understanding (temporal_qa.json) and consistency (consistency_qa.json:
two phrasings of one question, answered apart and judged together)."""

from __future__ import annotations

from pathlib import Path

from vidlab.conversation import MediaPart
from vidlab.errors import EvaluationError
from vidlab.evaluation.benchmarks.common import (
    Collector,
    find_video,
    json_items,
    layout_error,
    prompt_record,
    question_text,
    require_folder,
)
from vidlab.evaluation.benchmarks.spec import Benchmark
from vidlab.evaluation.records import EvalSet

SETS = ("generic", "temporal", "consistency")
# The judge prompts each set's answers are scored under (vidlab.evaluation.judge.VIDEO_CHATGPT_PROMPTS).
JUDGES = {"generic": ["videochatgpt_correctness", "videochatgpt_detail", "videochatgpt_context"],
          "temporal": "videochatgpt_temporal", "consistency": "videochatgpt_consistency"}


def _answer(item: dict, where: str) -> str:
    answer = item.get("A")
    if not isinstance(answer, str) or not answer.strip():
        raise EvaluationError(f'{where}: the question has no answer "A".')
    return answer


def load(root: Path, split: str, subtitles: bool) -> EvalSet:
    sets = SETS if split == "all" else (split,)
    for name in sets:
        if not (root / f"{name}_qa.json").is_file():
            raise layout_error(root, "Video-ChatGPT", f"the file {root / (name + '_qa.json')}",
                               "Video-ChatGPT's quantitative_evaluation/README.md links the question-answer files.")
    folder = require_folder(root, ("Test_Videos", "videos"), "Video-ChatGPT")
    found = Collector()
    for name in sets:
        path = root / f"{name}_qa.json"
        for number, (where, item) in enumerate(json_items(path), start=1):
            questions = ("Q1", "Q2") if name == "consistency" else ("Q",)
            for member, field in enumerate(questions, start=1):
                record_id = f"{name}/{number}" + (f"/{member}" if name == "consistency" else "")

                def build(index: int, item=item, where=where, record_id=record_id, name=name, field=field,
                          member=member, number=number):
                    if isinstance(item, Exception):
                        raise item
                    if not isinstance(item, dict) or not isinstance(item.get("video_name"), str):
                        raise EvaluationError(f'{where}: a question must be an object with "video_name", '
                                              f'"{field}" and "A".')
                    question = question_text(item, where, field)
                    scoring = {"benchmark": "video_chatgpt", "judge": JUDGES[name], "question": question}
                    if name == "consistency":
                        scoring.update(pair=f"consistency/{number}", member=member)
                    return prompt_record(
                        record_id=record_id, where=where, index=index,
                        media=[MediaPart(type="video", path=find_video(root, folder, item["video_name"]))],
                        prompt=question, references=[_answer(item, where)], meta={"set": name}, scoring=scoring,
                    )

                found.add(where, record_id, build)
    return found.result(root / f"{sets[0]}_qa.json", "video_chatgpt", root, split)


BENCHMARK = Benchmark(
    name="video_chatgpt",
    title="Video-ChatGPT",
    task="generative (judged)",
    folder="video_chatgpt",
    download="github.com/mbzuai-oryx/Video-ChatGPT quantitative_evaluation/README.md (Test_Videos and the "
             "question-answer files); LLaMA-VID keeps them as LLaMA-VID-Eval/video-chatgpt/evaluation/",
    layout="""video_chatgpt/                  (LLaMA-VID's video-chatgpt/evaluation/)
  generic_qa.json                (each {video_name, Q, A}: correctness, detail, context)
  temporal_qa.json               (each {video_name, Q, A}: temporal)
  consistency_qa.json            (each {video_name, Q1, Q2, A}: consistency)
  Test_Videos/<video_name>.mp4   (or videos/)""",
    splits=("all", *SETS),
    load=load,
    headline=("judge_correctness", "judge_detail", "judge_context", "judge_temporal", "judge_consistency"),
    notes=(
        "Scores need an LLM judge (--judge-url; Video-ChatGPT and LLaMA-VID used gpt-3.5-turbo): each is the mean "
        "of the integer part of the judge's 0-5 score under Video-ChatGPT's prompt for that aspect. A generic "
        "answer is judged three times (correctness, detail, context); each consistency question pair is answered "
        "apart and judged once, together. A reply without a score counts as 0 and is listed (the original asks "
        "again until it gets one).",
        "LLaMA-VID's copy of the consistency script puts the first question in the judge prompt twice "
        "(question2 = sample['Q1']); vidlab sends both questions, as Video-ChatGPT's own script does. LLaMA-VID "
        "samples with temperature 0.2; vidlab decodes greedily unless told otherwise.",
    ),
)
