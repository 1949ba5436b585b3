"""Records for reinforcement (GRPO) and preference (DPO) tuning: a prompt, and what its answers are judged by.

GRPO records are the usual training records (`conversations` with a video and a last `gpt` turn):
the last assistant turn is the reference answer and the turns before it the prompt. An optional
`answer_type` (choice, yes_no, number, exact, span) says how an answer is checked; without it the
type is inferred from the reference (`vidlab.training.rewards.infer_answer_type`).

DPO records hold the prompt as `conversations` ending with the human question (a last `gpt` turn is
ignored) and two answers to it, `chosen` and `rejected` (strings). LLaVA-Hound's video DPO pairs
(ShareGPTVideo's `sft_dpo_17k.jsonl`: `id`, `video`, `prompt`, `chosen`, `rejected`) are read as they
are: `prompt` becomes the human turn, with the video before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vidlab.annotations import Position, read_records
from vidlab.conversation import Conversation, parse_record
from vidlab.errors import ConversationError, DataFileError, MediaNotFoundError, SampleError, VidlabError
from vidlab.training.data import SkipNote
from vidlab.training.rewards import ANSWER_TYPES, Reference, infer_answer_type, unreadable_reference


@dataclass
class PromptRecord:
    """One prompt to answer, with what its answers are judged by.

    Attributes:
        prompt: the conversation up to the last user turn (media included).
        reference: GRPO: the reference answer and its type (None for DPO records).
        chosen, rejected: DPO: the preferred and the other answer (None for GRPO records).
    """

    position: Position
    id: str
    prompt: Conversation
    data_root: Path
    reference: Reference | None = None
    chosen: str | None = None
    rejected: str | None = None

    @property
    def source(self) -> str:
        return str(self.position)


def _hound_record(item: dict) -> dict:
    """A LLaVA-Hound DPO pair (prompt, video, chosen, rejected) as a vidlab record."""
    video = item.get("video")
    videos = video if isinstance(video, list) else [video]
    question = str(item["prompt"])
    if "<video>" not in question:
        question = "<video>\n" * len(videos) + question
    return {**item, "video": videos, "conversations": [{"from": "human", "value": question}]}


def _prompt(conversation: Conversation, where: str, keep_last_answer: bool) -> tuple[Conversation, str | None]:
    turns = conversation.turns
    answer = None
    if turns[-1].role == "assistant":
        answer = turns[-1].text
        turns = turns[:-1]
    elif keep_last_answer:
        raise ConversationError(f'{where}: the last turn is not a "gpt" answer, so there is no reference answer to '
                                'reward. End the conversation with the expected answer as a gpt turn.', "no answer")
    return conversation.model_copy(update={"turns": turns}), answer


def parse_prompt_record(item, position: Position, root: Path, method: str, *, check_media: bool = True,
                        where: str | None = None) -> PromptRecord:
    """One GRPO (method "grpo") or DPO ("dpo") record; raises a VidlabError naming the field and the fix.

    check_media: also require every media file to exist under `root`. where: the place errors name
    (default: the position).
    """
    where = where or str(position)
    if isinstance(item, Exception):
        raise item
    if method == "dpo" and isinstance(item, dict) and "prompt" in item and "conversations" not in item:
        item = _hound_record(item)
    conversation = parse_record(item, where=where)
    for part in conversation.media if check_media else ():
        path = Path(part.path).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.exists():
            raise MediaNotFoundError(f"{where}: {part.type} not found: {path}. Relative paths are resolved against the "
                                     f"data root ({root}); fix the path or the data root.")
    record_id = str(item.get("id")) if item.get("id") is not None else position.default_id
    if method == "grpo":
        prompt, answer = _prompt(conversation, where, keep_last_answer=True)
        kind = item.get("answer_type")
        if kind is not None and kind not in ANSWER_TYPES:
            raise ConversationError(f"{where}: answer_type {kind!r} is not one of {', '.join(ANSWER_TYPES)}. Fix it or "
                                    "leave it out to have it inferred.", "wrong field types")
        kind = kind or infer_answer_type(answer)
        why = unreadable_reference(answer, kind)
        if why is not None:  # no sampled answer could ever be rewarded: the group would carry no signal
            raise ConversationError(f'{where}: the reference answer (last "gpt" turn) {answer!r} {why}, so no answer '
                                    f'can score under answer_type "{kind}". Fix the answer or the answer_type.',
                                    "wrong field types")
        return PromptRecord(position, record_id, prompt, root, Reference(answer, kind))
    prompt, _ = _prompt(conversation, where, keep_last_answer=False)
    pair = {name: item.get(name) for name in ("chosen", "rejected")}
    for name, text in pair.items():
        if not isinstance(text, str) or not text.strip():
            got = "missing" if text is None else "empty" if isinstance(text, str) else f"a {type(text).__name__}"
            raise ConversationError(f'{where}: "{name}" is {got}; a DPO record needs "chosen" and "rejected" answers '
                                    "(non-empty strings). Add it, or leave the record out.", "wrong field types")
    if pair["chosen"].strip() == pair["rejected"].strip():
        raise ConversationError(f'{where}: "chosen" and "rejected" are the same answer, so the pair teaches nothing. '
                                "Fix one, or leave the record out.", "wrong field types")
    return PromptRecord(position, record_id, prompt, root, chosen=pair["chosen"], rejected=pair["rejected"])


def load_prompt_records(files: list[Path], data_root: Path | None, method: str,
                        strict: bool = False) -> tuple[list[PromptRecord], list[SkipNote]]:
    """Read GRPO (method "grpo") or DPO ("dpo") records; bad ones become SkipNotes (or raise when strict).

    Raises:
        DataFileError: a file is missing or unreadable as a whole.
        SampleError: strict and a record is bad (its place, id and the fix).
    """
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise DataFileError(f"{', '.join(missing)}: no such annotation file. Fix data.train.")
    records: list[PromptRecord] = []
    skipped: list[SkipNote] = []
    for file in files:
        root = Path(data_root) if data_root is not None else Path(file).parent
        for raw in read_records(file):
            try:
                records.append(parse_prompt_record(raw.item, raw.position, root, method))
            except VidlabError as err:
                if strict:
                    raise SampleError(f"{err} (strict mode stops at the first bad record)") from err
                skipped.append(SkipNote.of(raw.position, raw.given_id, err))
    return records, skipped
