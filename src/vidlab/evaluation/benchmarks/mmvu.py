"""MMVU (yale-nlp/MMVU): expert-domain video questions, multiple choice (A-E) and open-ended, as TinyLLaVA-Video
asks and scores them, and as MMVU's own evaluation judges them (an LLM judge, `--judge-url`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from vidlab.conversation import MediaPart
from vidlab.errors import EvaluationError
from vidlab.evaluation.answers import LETTERS
from vidlab.evaluation.benchmarks.common import (
    Collector,
    choice_record,
    json_items,
    prompt_record,
    question_text,
    require_file,
    require_folder,
)
from vidlab.evaluation.benchmarks.spec import Benchmark
from vidlab.evaluation.records import EvalSet

QUESTION_TYPES = ("multiple-choice", "open-ended")
# TinyLLaVA-Video's tinyllava/eval/eval_mmvu.py, after the question (and its "A. ..." option lines).
CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."
OPEN_INSTRUCTION = "Answer the question directly without explanation."
_HF_PREFIX = re.compile(r"^https?://huggingface\.co/datasets/yale-nlp/MMVU/resolve/[^/]+/")


def mmvu_prompt(question: str, choices: dict[str, str] | None) -> str:
    """TinyLLaVA-Video's MMVU prompt: the question, then for multiple choice one `X. text` line per choice."""
    if choices is None:
        return f"{question}\n{OPEN_INSTRUCTION}"
    lines = "\n".join(f"{key}. {value}" for key, value in choices.items())
    return f"{question}\n{lines}\n{CHOICE_INSTRUCTION}"


def read_letter(response: str, options: Sequence[str]) -> str | None:
    """TinyLLaVA-Video's MMVU reader (the MMMU rule), without its random guess when nothing is found:
    the first character once spaces, then each of , . ! ? ; : ' in turn, are stripped from both ends; else a letter in
    parentheses, "(B)"; else a letter standing alone, " B "; else, for an answer of more than five words,
    an option's text in it. Several candidates: the one found last in the answer."""
    letters = list(LETTERS[: len(options)])
    said = response.strip()
    for char in ",.!?;:'":  # one after the other, as the original does
        said = said.strip(char)
    if said and said[0] in letters:
        return said[0]
    padded = f" {said} "  # so that " B " also matches at the ends
    for pattern in ("({})", " {} "):
        found = [(padded.rfind(pattern.format(letter)), letter) for letter in letters
                 if pattern.format(letter) in padded]
        if found:
            return max(found)[1]
    if len(padded.split()) > 5:
        lowered = padded.lower()
        found = [(lowered.rfind(text.lower()), letter) for letter, text in zip(letters, options)
                 if text and text.lower() in lowered]
        if found:
            return max(found)[1]
    return None


def read_match(response: str, row: dict) -> tuple[bool, bool]:
    """Open-ended, TinyLLaVA-Video's rule: right when the longer of answer and reference contains the other
    (case ignored). An empty answer is unreadable (the original counts it right: "" is in every reference)."""
    said, truth = response.strip().lower(), str(row["references"][0]).lower()
    if not said:
        return False, False
    return (truth in said) if len(said) > len(truth) else (said in truth), True


def _video_path(value: object, where: str) -> str:
    """The release's video URL (https://huggingface.co/datasets/yale-nlp/MMVU/resolve/main/videos/<Subject>/<n>.mp4)
    -> videos/<Subject>/<n>.mp4 in the folder; a relative path is kept."""
    if not isinstance(value, str) or not value.strip():
        raise EvaluationError(f'{where}: the question has no "video". Add the video\'s path or release URL.')
    path = _HF_PREFIX.sub("", value.strip())
    if "://" in path:
        raise EvaluationError(f"{where}: the video {value!r} is not in the MMVU release (huggingface.co/datasets/"
                              "yale-nlp/MMVU/resolve/main/...). Give a path relative to the MMVU folder.")
    return path


def _choices(item: dict, where: str) -> dict[str, str]:
    choices = item.get("choices")
    if not isinstance(choices, dict) or not choices or not all(isinstance(v, str) for v in choices.values()):
        raise EvaluationError(f'{where}: a multiple-choice question needs "choices" as {{"A": text, "B": text, ...}}.')
    if list(choices) != list(LETTERS[: len(choices)]):
        raise EvaluationError(f'{where}: "choices" keys must be the letters A, B, C, ... in order '
                              f"(got {list(choices)}).")
    return choices


def load(root: Path, split: str, subtitles: bool) -> EvalSet:
    path = require_file(root, [f"{split}.json", f"data/{split}.json"], "MMVU",
                        "It is validation.json of huggingface.co/datasets/yale-nlp/MMVU.")
    require_folder(root, ("videos",), "MMVU")
    found = Collector()
    for where, item in json_items(path):
        record_id = str(item["id"]) if isinstance(item, dict) and item.get("id") is not None else None

        def build(index: int, item=item, where=where, record_id=record_id):
            if isinstance(item, Exception):
                raise item
            if not isinstance(item, dict) or record_id is None:
                raise EvaluationError(f'{where}: a question must be an object with "id", "video", "question_type", '
                                      '"question", "choices" and "answer".')
            kind = item.get("question_type")
            if kind not in QUESTION_TYPES:
                raise EvaluationError(f'{where}: "question_type" must be one of {", ".join(QUESTION_TYPES)} '
                                      f"(got {kind!r}).")
            question = question_text(item, where)
            answer = str(item.get("answer") or "").strip()
            if not answer:
                raise EvaluationError(f'{where}: the question has no "answer".')
            subject = (item.get("metadata") or {}).get("subject") if isinstance(item.get("metadata"), dict) else None
            meta = {"question_type": kind, **({"subject": str(subject)} if subject else {})}
            media = [MediaPart(type="video", path=_video_path(item.get("video"), where))]
            scoring = {"benchmark": "mmvu", "judge": "mmvu", "question": question, "answer": answer}
            if kind == "open-ended":
                return prompt_record(record_id=record_id, where=where, index=index, media=media,
                                     prompt=mmvu_prompt(question, None), references=[answer], meta=meta,
                                     scoring={**scoring, "kind": "match"})
            choices = _choices(item, where)
            if answer not in choices:
                raise EvaluationError(f'{where}: "answer" {answer!r} is not one of the choices {", ".join(choices)}.')
            scoring["choices"] = "\n".join(f"{key}: {value}" for key, value in choices.items())  # as MMVU's judge
            return choice_record(record_id=record_id, where=where, index=index, media=media,
                                 prompt=mmvu_prompt(question, choices), options=list(choices.values()), answer=answer,
                                 meta=meta, scoring=scoring)

        found.add(where, record_id, build)
    return found.result(path, "mmvu", root, split)


BENCHMARK = Benchmark(
    name="mmvu",
    title="MMVU",
    task="multiple choice (5) and open-ended QA",
    folder="mmvu",
    download="https://huggingface.co/datasets/yale-nlp/MMVU (validation.json and videos/); the test set is hidden",
    layout="""mmvu/
  validation.json                  (or data/validation.json, as github.com/yale-nlp/MMVU ships it)
  videos/<Subject>/<n>.mp4         (the path after resolve/main/ in each question's "video" URL)""",
    splits=("validation",),
    load=load,
    groups=("question_type", "subject"),
    headline=("accuracy", "judge_accuracy"),
    read_answer=read_letter,
    read_match=read_match,
    notes=(
        "Prompts and accuracy are TinyLLaVA-Video's (tinyllava/eval/eval_mmvu.py, the numbers of its README): "
        "multiple choice read by the MMMU rule, open-ended right when the longer of answer and reference contains "
        "the other. Where TinyLLaVA-Video guesses a random letter for an unreadable answer, vidlab counts it wrong "
        "and lists it; an empty open-ended answer is wrong (the original counts it right).",
        "judge_accuracy is MMVU's own scoring (acc_evaluation.py): an LLM judge (--judge-url; MMVU used GPT-4o) "
        "extracts the final answer of every question, multiple choice included, and says whether it is correct. "
        "MMVU asks with structured output; vidlab sends the same messages and reads the JSON from the reply. "
        "MMVU's own prompts (chain-of-thought or direct) are not the ones asked here.",
    ),
)
