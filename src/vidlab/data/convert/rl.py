"""Reinforcement (GRPO) and preference (DPO) data sets -> vidlab's GRPO and DPO records.

- Video-R1 (tulerfeng/Video-R1): `Video-R1-260k.json`, a JSON list of {"problem_id", "problem",
  "data_type" (video or image), "problem_type" (multiple choice, numerical, OCR, free-form,
  regression), "options" (["A. ...", ...]), "solution" ("<answer>B</answer>"), "path" (relative to
  the data set's folder, "./LLaVA-Video-178K/..."), "data_source"}. Each becomes a GRPO record: the
  question (with its options, as Video-R1 asks them), the answer inside <answer> as the last gpt turn,
  and an `answer_type` from the problem type (multiple choice -> choice, numerical and regression ->
  number, OCR and free-form -> exact; Video-R1 scores the last three by relative error, WER and
  ROUGE, which vidlab's exact rewards do not: noted on the conversion).
- LLaVA-Hound's video DPO pairs (ShareGPTVideo `sft_dpo_17k.jsonl`: {"id", "video", "prompt",
  "chosen", "rejected", "chosen_score", "rejected_score"}): each becomes a DPO record, the prompt
  after the video as the human turn, `chosen` and `rejected` kept (and the scores).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vidlab.data.convert.common import Item, failed, json_items, media_record, path_list, text_of

# Video-R1's problem types -> vidlab's answer types.
PROBLEM_TYPES = {"multiple choice": "choice", "numerical": "number", "regression": "number", "OCR": "exact",
                 "free-form": "exact"}
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _solution(value: Any) -> str:
    text = text_of(value, '"solution"')
    found = _ANSWER.findall(text)
    answer = (found[-1] if found else text).strip()
    if not answer:
        raise ValueError('"solution" has an empty <answer></answer>')
    return answer


def _video_r1_record(raw: dict) -> tuple[dict, list[str]]:
    notes = []
    problem = text_of(raw.get("problem"), '"problem"').strip()
    problem_type = raw.get("problem_type")
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f'"problem_type" {problem_type!r} is not one of {", ".join(PROBLEM_TYPES)}')
    data_type = raw.get("data_type", "video")
    if data_type not in ("video", "image"):
        raise ValueError(f'"data_type" {data_type!r} is neither video nor image')
    media = [path.removeprefix("./") for path in path_list(raw.get("path"), "path")]
    if not media:
        raise ValueError('no "path" to the video or image')
    options = raw.get("options") or []
    if problem_type == "multiple choice":
        if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
            raise ValueError('a multiple-choice problem needs "options", a list of strings such as "A. a cat"')
        problem = f"{problem}\nOptions:\n" + "\n".join(o.strip() for o in options)
    if problem_type in ("OCR", "free-form", "regression"):
        notes.append(f"{problem_type} answers scored by "
                     f"{'number equality' if problem_type == 'regression' else 'exact match'} (Video-R1: "
                     f"{dict(OCR='WER', regression='relative error').get(problem_type, 'ROUGE')})")
    placeholder = f"<{data_type}>\n" * len(media)
    record = media_record(raw.get("problem_id"), media if data_type == "video" else [],
                          media if data_type == "image" else [])
    record.update(answer_type=PROBLEM_TYPES[problem_type], conversations=[
        {"from": "human", "value": placeholder + problem}, {"from": "gpt", "value": _solution(raw.get("solution"))}])
    if raw.get("data_source") is not None:
        record["data_source"] = raw["data_source"]
    return record, notes


def _object_items(path: Path, build: Callable[[dict], tuple[dict, list[str]]]) -> Iterator[Item]:
    """One Item per JSON object of `path`: `build`'s record and notes, or the ValueError it raised as the problem."""
    for where, raw in json_items(path):
        try:
            if isinstance(raw, Exception):
                raise raw
            if not isinstance(raw, dict):
                raise ValueError(f"a record must be a JSON object, got {type(raw).__name__}")
            record, notes = build(raw)
        except ValueError as err:
            yield failed(where, err)
            continue
        yield Item(where, records=[record], notes=notes)


def _llava_hound_record(raw: dict) -> tuple[dict, list[str]]:
    videos = path_list(raw.get("video"), "video")
    if not videos:
        raise ValueError('no "video"')
    prompt = text_of(raw.get("prompt"), '"prompt"').strip()
    chosen, rejected = text_of(raw.get("chosen"), '"chosen"'), text_of(raw.get("rejected"), '"rejected"')
    if "<video>" not in prompt:
        prompt = "<video>\n" * len(videos) + prompt
    record = media_record(raw.get("id"), videos, [])
    record.update(conversations=[{"from": "human", "value": prompt}], chosen=chosen, rejected=rejected)
    record.update({k: raw[k] for k in ("chosen_score", "rejected_score") if k in raw})
    return record, []


def read_video_r1(path: Path, **_: Any) -> Iterator[Item]:
    return _object_items(path, _video_r1_record)


def read_llava_hound_dpo(path: Path, **_: Any) -> Iterator[Item]:
    return _object_items(path, _llava_hound_record)
