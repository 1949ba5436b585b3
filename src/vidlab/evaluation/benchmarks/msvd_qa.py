"""MSVD-QA and MSRVTT-QA: open-ended questions about short clips, asked and judged as LLaMA-VID does (Video-ChatGPT's
zero-shot QA protocol: the bare question, then an LLM judge's yes/no and 0-5 score)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidlab.conversation import MediaPart
from vidlab.errors import EvaluationError
from vidlab.evaluation.benchmarks.common import (
    Collector,
    find_video,
    json_items,
    prompt_record,
    question_text,
    require_file,
    require_folder,
)
from vidlab.evaluation.benchmarks.spec import Benchmark
from vidlab.evaluation.records import EvalSet
from vidlab.files import TEXT_ENCODING

# The question words MSVD-QA and MSRVTT-QA report accuracy by (Xu et al. 2017); others are "other".
QUESTION_WORDS = ("what", "who", "how", "when", "where")
MAPPING = "youtube_mapping.txt"  # MSVD: "<YouTube clip name> vid<N>" per line (the MSVD-QA release)


def question_word(question: str) -> str:
    words = question.strip().lower().split()
    return words[0] if words and words[0] in QUESTION_WORDS else "other"


def _msvd_names(root: Path) -> dict[str, str]:
    path = root / MAPPING
    if not path.is_file():
        return {}
    pairs = (line.split() for line in path.read_text(encoding=TEXT_ENCODING).splitlines())
    return {pair[1]: pair[0] for pair in pairs if len(pair) == 2}


def _video_stem(value: Any, prefix: str, names: dict[str, str], where: str) -> str:
    """LLaMA-VID's test_qa.json names the file (video_id = its stem); the original release gives a number:
    MSRVTT video<N>, MSVD vid<N> renamed to its YouTube clip by youtube_mapping.txt."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise EvaluationError(f'{where}: the question has no "video_id". Add the video file\'s name.')
    value = str(value).strip()
    if value.isdigit():
        value = f"{prefix}{value}"
    value = names.get(value, value)
    return value.rsplit(".", 1)[0] if value.lower().endswith((".mp4", ".avi", ".mkv", ".webm", ".mov")) else value


def _loader(name: str, title: str, prefix: str, folders: tuple[str, ...]):
    def load(root: Path, split: str, subtitles: bool) -> EvalSet:
        path = require_file(root, [f"{split}_qa.json"], title,
                            "LLaMA-VID's README links the file (LLaMA-VID-Eval/" + title + "/).")
        folder = require_folder(root, folders, title)
        names = _msvd_names(root) if prefix == "vid" else {}
        found = Collector()
        seen: dict[str, int] = {}
        for number, (where, item) in enumerate(json_items(path), start=1):
            given = item.get("id") if isinstance(item, dict) else None
            record_id = str(given) if given is not None else str(number)
            seen[record_id] = seen.get(record_id, -1) + 1
            if seen[record_id]:  # a repeated id gets a count, as LLaMA-VID's scorer keys them (id_<n>)
                record_id = f"{record_id}_{seen[record_id]}"

            def build(index: int, item=item, where=where, record_id=record_id):
                if isinstance(item, Exception):
                    raise item
                if not isinstance(item, dict):
                    raise EvaluationError(f'{where}: a question must be an object with "video_id", "question", '
                                          '"answer" and "id".')
                question = question_text(item, where)
                answer = str(item.get("answer") or "").strip()
                if not answer:
                    raise EvaluationError(f'{where}: the question has no "answer".')
                stem = _video_stem(item.get("video_id"), prefix, names, where)
                return prompt_record(
                    record_id=record_id, where=where, index=index,
                    media=[MediaPart(type="video", path=find_video(root, folder, stem))],
                    prompt=question, references=[answer], meta={"type": question_word(question)},
                    scoring={"benchmark": name, "judge": "videochatgpt_qa", "question": question},
                )

            found.add(where, record_id, build)
        return found.result(path, name, root, split)

    return load


_NOTES = (
    "As LLaMA-VID evaluates it (llamavid/eval/model_msvd_qa.py, eval_msvd_qa.py): the question alone after the "
    "video, then an LLM judge (--judge-url; LLaMA-VID used gpt-3.5-turbo) under Video-ChatGPT's QA prompt gives "
    "yes/no (judge_accuracy) and a 0-5 score (judge_score, the integer part averaged as there). A reply without a "
    "verdict counts as no / 0 and is listed (the original asks again until it gets one). LLaMA-VID samples with "
    "temperature 0.2; vidlab decodes greedily unless told otherwise.",
    "Without a judge: exact_match and strict_match against the one-word answer, overall and per question word.",
)

MSVD_QA = Benchmark(
    name="msvd_qa",
    title="MSVD-QA",
    task="open-ended QA",
    folder="msvd_qa",
    download="LLaMA-VID's README (github.com/dvlab-research/LLaMA-VID, Preparation: MSVD-QA link); or the "
             "original release github.com/xudejing/video-question-answering with the MSVD clips (YouTubeClips)",
    layout="""msvd_qa/
  test_qa.json                   (val_qa.json for --split val; each {video_id, question, answer, id})
  video/<video_id>.avi           (or YouTubeClips/; a numeric video_id N is the clip youtube_mapping.txt names vidN)
  youtube_mapping.txt            (only for numeric video ids)""",
    splits=("test", "val"),
    load=_loader("msvd_qa", "MSVD-QA", "vid", ("video", "YouTubeClips", "videos")),
    groups=("type",),
    headline=("judge_accuracy", "judge_score", "exact_match"),
    notes=_NOTES,
)

MSRVTT_QA = Benchmark(
    name="msrvtt_qa",
    title="MSRVTT-QA",
    task="open-ended QA",
    folder="msrvtt_qa",
    download="LLaMA-VID's README (github.com/dvlab-research/LLaMA-VID, Preparation: MSRVTT-QA link); or the "
             "original release github.com/xudejing/video-question-answering with the MSR-VTT videos",
    layout="""msrvtt_qa/
  test_qa.json                   (val_qa.json for --split val; each {video_id, question, answer, id})
  video/<video_id>.mp4           (or TestVideo/, videos/; a numeric video_id N is video<N>.mp4)""",
    splits=("test", "val"),
    load=_loader("msrvtt_qa", "MSRVTT-QA", "video", ("video", "TestVideo", "videos")),
    groups=("type",),
    headline=("judge_accuracy", "judge_score", "exact_match"),
    notes=_NOTES,
)
