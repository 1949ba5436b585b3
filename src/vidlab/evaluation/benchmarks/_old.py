"""Video multiple-choice benchmarks: Video-MME, MVBench and a general form; answer letters; accuracy.

Prompts follow VideoLLaMA3's own evaluation code so that numbers can be compared with its paper.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from vidlab.conversation import Conversation, MediaPart, TextPart, Turn, seconds_field
from vidlab.errors import EvaluationError, VidlabError
from vidlab.evaluation.records import (
    BREAKDOWN_KEYS,
    EvalRecord,
    EvalSet,
    Skipped,
)
from vidlab.evaluation.subtitles import read_subtitles
from vidlab.files import iter_json_items, reason_of

LETTERS = string.ascii_uppercase
ANSWER_DIRECTLY = "Answer with the option's letter from the given choices directly."
MVBENCH_INSTRUCTION = "Answer with the option's letter from the given choices directly and only give the best option."
VIDEOMME_HEAD = (
    "Select the best answer to the following multiple-choice question based on the video. "
    "Respond with only the letter (A, B, C, or D) of the correct option.\n"
)
VIDEOMME_TAIL = (
    "Answer with the option's letter from the given choices directly and only give the best option. "
    "The best answer is:"
)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")

# MVBench's released layout (json/<file>, video/<folder>/<video>): task name, video folder, and whether
# the task's records carry start/end seconds to cut the clip. From MVBench's and VideoLLaMA3's eval code.
MVBENCH_TASKS: dict[str, tuple[str, str, bool]] = {
    "action_sequence.json": ("Action Sequence", "star/Charades_v1_480/", True),
    "action_prediction.json": ("Action Prediction", "star/Charades_v1_480/", True),
    "action_antonym.json": ("Action Antonym", "ssv2_video/", False),
    "fine_grained_action.json": ("Fine-grained Action", "Moments_in_Time_Raw/videos/", False),
    "unexpected_action.json": ("Unexpected Action", "FunQA_test/test/", False),
    "object_existence.json": ("Object Existence", "clevrer/video_validation/", False),
    "object_interaction.json": ("Object Interaction", "star/Charades_v1_480/", True),
    "object_shuffle.json": ("Object Shuffle", "perception/videos/", False),
    "moving_direction.json": ("Moving Direction", "clevrer/video_validation/", False),
    "action_localization.json": ("Action Localization", "sta/sta_video/", True),
    "scene_transition.json": ("Scene Transition", "scene_qa/video/", False),
    "action_count.json": ("Action Count", "perception/videos/", False),
    "moving_count.json": ("Moving Count", "clevrer/video_validation/", False),
    "moving_attribute.json": ("Moving Attribute", "clevrer/video_validation/", False),
    "state_change.json": ("State Change", "perception/videos/", False),
    "fine_grained_pose.json": ("Fine-grained Pose", "nturgbd/", False),
    "character_order.json": ("Character Order", "perception/videos/", False),
    "egocentric_navigation.json": ("Egocentric Navigation", "vlnqa/", False),
    "episodic_reasoning.json": ("Episodic Reasoning", "tvqa/frames_fps3_hq/", True),  # frame folders, 3 fps
    "counterfactual_inference.json": ("Counterfactual Inference", "clevrer/video_validation/", False),
}

_LETTER_PREFIX_RE = re.compile(r"^\s*\(?([A-Z])\s*[\.\):]\s*")


# ---- prompts -------------------------------------------------------------------------------------


def choice_prompt(question: str, options: Sequence[str]) -> str:
    """The general multiple-choice prompt: question, lettered options, VideoLLaMA3's instruction."""
    lines = "".join(f"({LETTERS[i]}) {option}\n" for i, option in enumerate(options))
    return f"Question: {question}\nOptions:\n{lines}{ANSWER_DIRECTLY}"


def mvbench_prompt(question: str, options: Sequence[str]) -> str:
    """VideoLLaMA3's MVBench prompt."""
    lines = "".join(f"({LETTERS[i]}) {option}\n" for i, option in enumerate(options))
    return f"Question: {question}\nOptions:\n{lines}{MVBENCH_INSTRUCTION}"


def videomme_prompt(question: str, options: Sequence[str]) -> str:
    """VideoLLaMA3's Video-MME prompt (the options as released, "A. ...")."""
    lines = "".join(f"{LETTERS[i]}. {option}\n" for i, option in enumerate(options))
    return f"{VIDEOMME_HEAD}{question}\n{lines}{VIDEOMME_TAIL}"


# ---- answer letters ------------------------------------------------------------------------------


def _normalise(text: str) -> str:
    text = text.lower().translate(str.maketrans(string.punctuation, " " * len(string.punctuation)))
    return " ".join(text.split())


def extract_letter(response: str, options: Sequence[str]) -> str | None:
    """The option letter a free-form answer picks, or None when it names none or several.

    Understands "B", "(B)", "B.", "B) text", "[B]", "**B**", "Answer: B", "The answer is (B)",
    "The best option is B.", and an answer that quotes exactly one option's text. An article "A"
    ("A man walks") is not read as option A.
    """
    valid = LETTERS[: len(options)]
    if not valid:
        return None
    text = response.strip()
    letter_class = f"[{valid}]"
    # 1. The answer starts with the letter on its own: "B", "(B)", "B.", "B)", "**B**", "B: the dog".
    lead = re.match(rf"^[\s\*\(\[\"'`]*({letter_class})(?:[\)\]\.:,\*\"'`]|\s*$|\s+[-–—])", text)
    if lead:
        return lead.group(1)
    if len(text) == 1 and text.upper() in valid:
        return text.upper()
    # 2. After an announcing phrase: "answer is B", "Answer: (C)", "best option is: D", "option B".
    announced = re.search(
        rf"(?i:answer|option|choice)(?:\s+(?i:is|would\s+be|should\s+be))?\s*[:\-]?\s*[\(\[\*\"']*"
        rf"({letter_class})(?![A-Za-z])",
        text,
    )
    if announced:
        return announced.group(1)
    # 3. A bracketed letter, when only one letter appears that way: "... so (C) fits".
    bracketed = set(re.findall(rf"\(({letter_class})\)", text))
    if len(bracketed) == 1:
        return bracketed.pop()
    # 4. A letter standing alone before punctuation or at the end: "I think it is B."
    alone = set(re.findall(rf"(?<![A-Za-z'])({letter_class})(?=[\.\):,;!?]|\s*$)", text))
    if len(alone) == 1:
        return alone.pop()
    # 5. The text of exactly one option (the longest, when one option's text holds another's).
    said = _normalise(text)
    quoted = [i for i, option in enumerate(options) if _normalise(option) and f" {_normalise(option)} " in f" {said} "]
    if quoted:
        longest = max(quoted, key=lambda i: len(_normalise(options[i])))
        others = [i for i in quoted if i != longest]
        if all(_normalise(options[i]) in _normalise(options[longest]) for i in others):
            return valid[longest]
    return None


def accuracy_table(rows: Iterable[dict]) -> dict[str, Any]:
    """Accuracy (0-100) overall and per task / category / duration over scored choice rows.

    Each row needs `correct` (bool) and may carry `meta` with the breakdown keys.
    """
    groups: dict[str, dict[str, list[int]]] = {key: {} for key in BREAKDOWN_KEYS}
    overall = []
    for row in rows:
        hit = int(bool(row["correct"]))
        overall.append(hit)
        for key in BREAKDOWN_KEYS:
            value = (row.get("meta") or {}).get(key)
            if value is not None:
                groups[key].setdefault(str(value), []).append(hit)

    def summary(hits: list[int]) -> dict:
        return {"accuracy": 100.0 * sum(hits) / len(hits), "correct": sum(hits), "total": len(hits)}

    table: dict[str, Any] = {"overall": summary(overall) if overall else None}
    for key, values in groups.items():
        if values:
            table[key] = {name: summary(hits) for name, hits in sorted(values.items())}
    return table


# ---- loaders -------------------------------------------------------------------------------------


def _strip_letters(options: Sequence[str]) -> list[str]:
    """["A. dog", "B. cat"] -> ["dog", "cat"] when every option carries its own letter in order."""
    matches = [_LETTER_PREFIX_RE.match(o) for o in options]
    if all(m and m.group(1) == LETTERS[i] for i, m in enumerate(matches)):
        return [o[m.end() :].strip() for o, m in zip(options, matches)]
    return [o.strip() for o in options]


def _options(value: Any, where: str) -> list[str]:
    if isinstance(value, dict):
        keys = sorted(value)
        if keys != list(LETTERS[: len(keys)]):
            raise EvaluationError(f'{where}: "options" keys must be the letters A, B, C, ... in order (got {keys}).')
        value = [value[k] for k in keys]
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(o, (str, int, float)) for o in value):
        raise EvaluationError(f'{where}: "options" must be a list (or A/B/... object) of at least two answers.')
    if len(value) > len(LETTERS):
        raise EvaluationError(f"{where}: more than {len(LETTERS)} options; split the question.")
    return _strip_letters([str(o) for o in value])


def _answer_letter(answer: Any, options: Sequence[str], where: str) -> str:
    """A letter ("B", "(B)", "b."), a 0-based index, or the text of one option -> the letter."""
    valid = LETTERS[: len(options)]
    if isinstance(answer, bool):
        answer = None
    if isinstance(answer, int) and 0 <= answer < len(options):
        return valid[answer]
    if isinstance(answer, str):
        bare = answer.strip().strip("().: ").upper()
        if len(bare) == 1 and bare in valid:
            return bare
        texts = [_normalise(o) for o in options]
        if _normalise(answer) in texts and texts.count(_normalise(answer)) == 1:
            return valid[texts.index(_normalise(answer))]
    raise EvaluationError(
        f'{where}: "answer" {answer!r} is not one of the letters {", ".join(valid)}, an option index or the text '
        "of one option. Fix the answer."
    )


def _clip_window(item: dict, where: str) -> tuple[float | None, float | None]:
    return seconds_field(item.get("start"), "start", where), seconds_field(item.get("end"), "end", where)


def _media_parts(item: dict, where: str, start: float | None = None, end: float | None = None) -> list[MediaPart]:
    videos = item.get("video")
    images = item.get("image")
    videos = [videos] if isinstance(videos, str) else list(videos or [])
    images = [images] if isinstance(images, str) else list(images or [])
    if not all(isinstance(p, str) and p for p in [*videos, *images]):
        raise EvaluationError(f'{where}: "video" and "image" must be paths (strings or lists of strings).')
    return [MediaPart(type="video", path=p, start=start, end=end) for p in videos] + [
        MediaPart(type="image", path=p) for p in images
    ]


def choice_record(
    *,
    record_id: str,
    where: str,
    index: int,
    media: list[MediaPart],
    prompt: str,
    options: list[str],
    answer: str,
    meta: dict[str, str],
    subtitles=None,
) -> EvalRecord:
    conversation = Conversation(
        turns=[Turn(role="user", parts=[*media, TextPart(text=prompt)])], id=record_id, source=where
    )
    return EvalRecord(record_id, where, index, conversation, [answer], options, answer, meta, subtitles)


def _question(item: dict, where: str) -> str:
    question = item.get("question")
    if not isinstance(question, str) or not question.strip():
        raise EvaluationError(f'{where}: the record has no "question" text. Add one.')
    return question.strip()


def _meta(item: dict, names: dict[str, str]) -> dict[str, str]:
    return {key: str(item[field]) for key, field in names.items() if item.get(field) not in (None, "")}


def load_choices(path: Path, data_root: Path | None = None) -> EvalSet:
    """The general multiple-choice form, one question per record (JSON list or JSONL):

    {"id": "q1", "video": "clips/a.mp4", "question": "What moves?", "options": ["a dog", "a cat"],
     "answer": "B", "subtitles": "text or subs/a.srt", "task": "...", "category": "...", "duration": "..."}
    """
    root = data_root or path.parent
    records, skipped = [], []
    for index, (line, item) in enumerate(iter_json_items(path)):
        where = f"{path}:{line}"
        record_id = str(item["id"]) if isinstance(item, dict) and item.get("id") is not None else f"{path.name}:{line}"
        try:
            if isinstance(item, Exception):
                raise item
            if not isinstance(item, dict):
                raise EvaluationError(f"{where}: a record must be a JSON object.")
            options = _options(item.get("options"), where)
            letter = _answer_letter(item.get("answer"), options, where)
            subtitles = item.get("subtitles")
            if isinstance(subtitles, str) and Path(subtitles).suffix.lower() in (".srt", ".vtt"):
                subtitles = read_subtitles(root / subtitles)
            elif subtitles is not None and not isinstance(subtitles, str):
                raise EvaluationError(f'{where}: "subtitles" must be text or the path of an .srt / .vtt file.')
            records.append(
                choice_record(
                    record_id=record_id, where=where, index=index,
                    media=_media_parts(item, where, *_clip_window(item, where)),
                    prompt=choice_prompt(_question(item, where), options), options=options, answer=letter,
                    meta=_meta(item, {k: k for k in BREAKDOWN_KEYS}), subtitles=subtitles,
                )
            )
        except VidlabError as err:
            skipped.append(Skipped(where, record_id, reason_of(err, where), index))
    return EvalSet(path, "choice", root, records, skipped)


def _find_video(root: Path, folder: str, name: str) -> str:
    for suffix in VIDEO_SUFFIXES:
        if (root / folder / f"{name}{suffix}").exists():
            return f"{folder}/{name}{suffix}"
    return f"{folder}/{name}.mp4"


def _videomme_rows(path: Path) -> list[tuple[str, Any]]:
    """(where, question row) pairs from the parquet release, its JSON/JSONL export, or per-video groups."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise EvaluationError(
                f"{path}: reading parquet needs pyarrow. `pip install pyarrow`, or export the rows to JSONL."
            ) from err
        return [(f"{path}#row{n}", row) for n, row in enumerate(pq.read_table(path).to_pylist(), start=1)]
    rows = []
    for line, item in iter_json_items(path):
        where = f"{path}:{line}"
        if isinstance(item, dict) and isinstance(item.get("questions"), list):
            group = {k: v for k, v in item.items() if k != "questions"}
            rows.extend((where, {**group, **q} if isinstance(q, dict) else q) for q in item["questions"])
        else:
            rows.append((where, item))
    return rows


def load_videomme(path: Path, data_root: Path | None = None, subtitles: bool = False) -> EvalSet:
    """Video-MME as released (test-00000-of-00001.parquet, or the same rows as JSON/JSONL, or the
    per-video form with a "questions" list). Videos are `videos/<videoID>.mp4` under the data root
    (default: the file's folder); subtitles, with `subtitles=True`, `subtitles/<videoID>.srt`.
    """
    root = data_root or path.parent
    records, skipped = [], []
    for index, (where, item) in enumerate(_videomme_rows(path)):
        record_id = None
        try:
            if isinstance(item, Exception):
                raise item
            if not isinstance(item, dict):
                raise EvaluationError(f"{where}: a record must be a JSON object.")
            video_key = item.get("videoID") or item.get("video_id")
            record_id = str(item.get("question_id") or f"{video_key}-{index + 1}")
            if not video_key:
                raise EvaluationError(f'{where}: the record has no "videoID". Video-MME rows name their video.')
            options = _options(list(item.get("options") or []), where)
            letter = _answer_letter(item.get("answer"), options, where)
            cues = None
            if subtitles:
                found = [root / f / f"{video_key}.srt" for f in ("subtitles", "subtitle")]
                cues = next((read_subtitles(p) for p in found if p.exists()), [])
            records.append(
                choice_record(
                    record_id=record_id, where=where, index=index,
                    media=[MediaPart(type="video", path=_find_video(root, "videos", str(video_key)))],
                    prompt=videomme_prompt(_question(item, where), options), options=options, answer=letter,
                    meta=_meta(item, {"task": "task_type", "category": "domain", "duration": "duration"}),
                    subtitles=cues,
                )
            )
        except VidlabError as err:
            skipped.append(Skipped(where, record_id, reason_of(err, where), index))
    return EvalSet(path, "videomme", root, records, skipped)


def load_mvbench(path: Path, data_root: Path | None = None) -> EvalSet:
    """MVBench as released: its `json/` folder (every task) or one task's JSON. Media are
    `video/<task folder>/<video>` under the data root (default: the folder above `json/`).
    A JSON file that is not one of the 20 tasks is read with paths relative to the data root.
    """
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise EvaluationError(f"{path}: no task JSON files in the folder. Point --data at MVBench's json/ folder.")
    json_dir = path if path.is_dir() else path.parent
    root = data_root or json_dir.parent
    records, skipped = [], []
    index = 0
    for file in files:
        task, folder, cut = MVBENCH_TASKS.get(file.name, (file.stem.replace("_", " ").title(), "", True))
        for number, (line, item) in enumerate(iter_json_items(file), start=1):
            where = f"{file}:{line}"
            record_id = f"{file.stem}-{number}"
            try:
                if isinstance(item, Exception):
                    raise item
                if not isinstance(item, dict) or not isinstance(item.get("video"), str):
                    raise EvaluationError(
                        f'{where}: an MVBench record needs "video", "question", "candidates" and "answer".'
                    )
                options = _options(item.get("candidates"), where)
                letter = _answer_letter(item.get("answer"), options, where)
                start, end = _clip_window(item, where) if cut else (None, None)
                video = f"video/{folder}{item['video']}" if folder else item["video"]
                records.append(
                    choice_record(
                        record_id=record_id, where=where, index=index,
                        media=[MediaPart(type="video", path=video, start=start, end=end)],
                        prompt=mvbench_prompt(_question(item, where), options), options=options, answer=letter,
                        meta={"task": task},
                    )
                )
            except VidlabError as err:
                skipped.append(Skipped(where, record_id, reason_of(err, where), index))
            index += 1
    return EvalSet(path, "mvbench", root, records, skipped)
