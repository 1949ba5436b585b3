"""One conversation model for annotation records and for chat messages.

Annotation records (the format VideoLLaMA3 users already have):
    {"id": "...", "video": ["clip.mp4"], "start": 2.0, "end": 9.5, "subtitles": "clip.srt" (optional),
     "conversations": [{"from": "human", "value": "<video>\\nWhat happens?"},
                       {"from": "gpt", "value": "A dog runs."}]}
Chat messages (the transformers / OpenAI style):
    [{"role": "user", "content": [{"type": "video", "video": "clip.mp4"},
                                  {"type": "text", "text": "What happens?"}]}]
Both become a `Conversation`: a list of turns, each a list of text and media parts.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from vidlab.errors import ConversationError

Role = Literal["system", "user", "assistant"]

ROLE_NAMES: dict[str, Role] = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}
PLACEHOLDERS = {"<video>": "video", "<image>": "image"}
_PLACEHOLDER_RE = re.compile(r"(<video>|<image>)\n?")


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class MediaPart(BaseModel):
    """A video (file or frame folder) or an image, by path, optionally cut to a clip window."""

    type: Literal["video", "image"]
    path: str
    start: float | None = None
    end: float | None = None
    subtitles: str | None = None  # a video's .srt / .vtt file (LLaMA-VID's movie prompt puts each line by its frame)


Part = TextPart | MediaPart


class Turn(BaseModel):
    role: Role
    parts: list[Part] = Field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def media(self) -> list[MediaPart]:
        return [p for p in self.parts if isinstance(p, MediaPart)]


class Conversation(BaseModel):
    """Turns in order; `source` says where it came from (file:line) for error messages."""

    turns: list[Turn]
    id: str | None = None
    source: str = "<conversation>"

    @property
    def media(self) -> list[MediaPart]:
        return [m for turn in self.turns for m in turn.media]

    def to_messages(self) -> list[dict[str, Any]]:
        """Messages for the chat template: media parts become `{"type": "video"}` placeholders."""
        messages = []
        for turn in self.turns:
            content = []
            for part in turn.parts:
                if isinstance(part, TextPart):
                    content.append({"type": "text", "text": part.text})
                else:
                    content.append({"type": part.type})
            messages.append({"role": turn.role, "content": content})
        return messages


def validate_turns(turns: list[Turn], where: str) -> None:
    """Check order and content: optional system turn first, then user and assistant alternating."""
    if not turns:
        raise ConversationError(
            f"{where}: the conversation has no turns. Add at least one user turn.", "empty conversation"
        )
    body = turns[1:] if turns[0].role == "system" else turns
    if not body:
        raise ConversationError(
            f"{where}: the conversation has only a system turn. Add a user turn after it.", "bad turns"
        )
    for i, turn in enumerate(turns):
        if not turn.media and not turn.text.strip():
            raise ConversationError(
                f"{where}: turn {i + 1} ({turn.role}) is empty. Give it text or remove it.", "empty turns"
            )
        if turn.role == "system" and i > 0:
            raise ConversationError(
                f"{where}: turn {i + 1} is a system turn; only the first turn may be one.", "bad turns"
            )
        if turn.role == "system" and turn.media:
            raise ConversationError(
                f"{where}: the system turn holds media; put videos and images in a user turn.", "bad turns"
            )
    for i, turn in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if turn.role != expected:
            n = i + 1 + (len(turns) - len(body))
            raise ConversationError(
                f"{where}: turn {n} is from {turn.role} but {expected} was expected "
                "(turns alternate user, assistant, user, ...). Merge or reorder the turns.", "bad turns"
            )
    for i, turn in enumerate(turns):
        if turn.role == "assistant" and turn.media:
            raise ConversationError(
                f"{where}: turn {i + 1} (assistant) holds media; media belong in user turns.", "bad turns"
            )


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _paths(record: dict, kind: str, where: str) -> list[str]:
    """The record's "video" or "image" entry: one path or a list of paths."""
    paths = _as_list(record.get(kind))
    if not all(isinstance(p, str) and p.strip() for p in paths):
        raise ConversationError(
            f'{where}: "{kind}" must be a path or a list of paths (strings), got {record.get(kind)!r}. Fix the record.',
            "wrong field types",
        )
    return paths


def _clock_seconds(text: str) -> float | None:
    """'00:01:05' or '1:05.5' as seconds, to suggest the number to write instead."""
    parts = text.strip().split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return None
    if not 2 <= len(values) <= 3:
        return None
    seconds = 0.0
    for value in values:
        seconds = seconds * 60 + value
    return seconds


def seconds_field(value: Any, name: str, where: str) -> float | None:
    """A clip bound (start/end) as seconds: a finite number of 0 or more, or None when absent."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    hint = "a number of seconds, 0 or more"
    if isinstance(value, str) and (clock := _clock_seconds(value)) is not None:
        hint += f" (for {value!r} write {clock:g})"
    elif isinstance(value, str):
        try:
            hint += f" (write {float(value):g} without quotes)"
        except ValueError:
            pass
    raise ConversationError(f'{where}: "{name}" must be {hint}, got {value!r}. Fix the record.', "wrong field types")


def _split_placeholders(text: str, media: dict[str, list[MediaPart]], where: str, turn: int) -> list[Part]:
    """'<video>\\nWhat?' -> [video part, text part]; media taken in order of appearance."""
    parts: list[Part] = []
    # The split keeps each placeholder (odd positions) and drops the newline that follows it.
    for i, piece in enumerate(_PLACEHOLDER_RE.split(text)):
        if i % 2 == 0:
            if piece:
                parts.append(TextPart(text=piece))
            continue
        kind = PLACEHOLDERS[piece]
        if not media[kind]:
            raise ConversationError(
                f"{where}: turn {turn} has more <{kind}> placeholders than the record has {kind}s. "
                f'Give one path in "{kind}" per <{kind}>.', "wrong placeholders"
            )
        parts.append(media[kind].pop(0))
    return parts


def _subtitle_paths(record: dict, videos: int, where: str) -> list[str | None]:
    """The record's "subtitles": one .srt / .vtt path per video (a list for several; null for one without)."""
    if record.get("subtitles") is None:
        return [None] * videos
    paths = _as_list(record["subtitles"])
    fix = ('Give "subtitles" as the path of an .srt or .vtt file (a list of them, or null, one per video in '
           '"video"). Fix the record.')
    if len(paths) != videos:
        raise ConversationError(f'{where}: "subtitles" names {len(paths)} file(s) for {videos} video(s). {fix}',
                                "wrong field types")
    for path in paths:
        if path is not None and not (isinstance(path, str) and path.lower().endswith((".srt", ".vtt"))):
            raise ConversationError(f'{where}: "subtitles" holds {path!r}. {fix}', "wrong field types")
    return paths


def parse_record(record: dict[str, Any], where: str = "<record>") -> Conversation:
    """An annotation record -> Conversation. `where` (file:line) goes into every error."""
    if not isinstance(record, dict):
        raise ConversationError(f"{where}: a record must be a JSON object, got {type(record).__name__}.",
                                "wrong field types")
    raw_turns = record.get("conversations")
    if not isinstance(raw_turns, list):
        raise ConversationError(f'{where}: the record has no "conversations" list. Add one (see the README).',
                                "wrong field types")
    if not raw_turns:
        raise ConversationError(f'{where}: the conversation is empty (no turns). Give it a human question '
                                "and a gpt answer, or leave the record out.", "empty conversation")
    start = seconds_field(record.get("start"), "start", where)
    end = seconds_field(record.get("end"), "end", where)
    if start is not None and end is not None and end <= start:
        raise ConversationError(f'{where}: "end" ({end:g}) must be after "start" ({start:g}). Fix the record.',
                                "clip window")
    videos = [MediaPart(type="video", path=p, start=start, end=end) for p in _paths(record, "video", where)]
    subtitles = _subtitle_paths(record, len(videos), where)
    videos = [v.model_copy(update={"subtitles": s}) for v, s in zip(videos, subtitles)]
    images = [MediaPart(type="image", path=p) for p in _paths(record, "image", where)]
    counts = {"video": len(videos), "image": len(images)}
    pending = {"video": videos, "image": images}

    turns = []
    for n, raw in enumerate(raw_turns, start=1):
        if not isinstance(raw, dict) or "from" not in raw or "value" not in raw:
            raise ConversationError(
                f'{where}: turn {n} must be an object with "from" and "value".', "wrong field types"
            )
        role = ROLE_NAMES.get(str(raw["from"]).lower())
        if role is None:
            raise ConversationError(
                f"{where}: turn {n} has unknown role {raw['from']!r}. Use one of: human, gpt, system "
                "(or user, assistant).", "bad turns"
            )
        if not isinstance(raw["value"], str):
            raise ConversationError(f'{where}: turn {n} "value" must be a string.', "wrong field types")
        turns.append(Turn(role=role, parts=_split_placeholders(raw["value"], pending, where, n)))

    for kind, left in pending.items():
        if left:
            used = counts[kind] - len(left)
            raise ConversationError(
                f"{where}: the record has {counts[kind]} {kind}(s) but {used} <{kind}> placeholder(s). "
                f"Put one <{kind}> in a human turn for each {kind}.", "wrong placeholders"
            )
    validate_turns(turns, where)
    record_id = record.get("id")
    return Conversation(turns=turns, id=None if record_id is None else str(record_id), source=where)


def _parse_content_item(item: Any, where: str, n: int) -> Part:
    if isinstance(item, str):
        return TextPart(text=item)
    if not isinstance(item, dict) or "type" not in item:
        raise ConversationError(f'{where}: message {n} has a content item without a "type".')
    kind = item["type"]
    if kind == "text":
        return TextPart(text=str(item.get("text", "")))
    if kind in ("video", "image"):
        path = item.get(kind) or item.get("path") or item.get("url")
        if not isinstance(path, str) or not path:
            raise ConversationError(f'{where}: message {n} has a {kind} item without a path ("{kind}": "file").')
        if kind == "image":
            return MediaPart(type="image", path=path)
        where_item = f"{where}: message {n}"
        start = seconds_field(item.get("start"), "start", where_item)
        end = seconds_field(item.get("end"), "end", where_item)
        subtitles = item.get("subtitles")
        if subtitles is not None and not (isinstance(subtitles, str) and subtitles.lower().endswith((".srt", ".vtt"))):
            raise ConversationError(f'{where_item}: "subtitles" must be the path of an .srt or .vtt file, got '
                                    f"{subtitles!r}.")
        return MediaPart(type="video", path=path, start=start, end=end, subtitles=subtitles)
    raise ConversationError(f"{where}: message {n} has content type {kind!r}. Use text, image or video.")


def parse_messages(messages: list[dict[str, Any]], where: str = "<messages>") -> Conversation:
    """Chat messages (role + content string or list of typed items) -> Conversation."""
    if not isinstance(messages, list):
        raise ConversationError(f"{where}: messages must be a list of {{role, content}} objects.")
    turns = []
    for n, message in enumerate(messages, start=1):
        if not isinstance(message, dict) or "role" not in message:
            raise ConversationError(f'{where}: message {n} must be an object with "role" and "content".')
        role = ROLE_NAMES.get(str(message["role"]).lower())
        if role is None:
            raise ConversationError(
                f"{where}: message {n} has unknown role {message['role']!r}. Use system, user or assistant."
            )
        content = message.get("content", "")
        items = content if isinstance(content, list) else [content]
        turns.append(Turn(role=role, parts=[_parse_content_item(i, where, n) for i in items]))
    validate_turns(turns, where)
    return Conversation(turns=turns, source=where)
