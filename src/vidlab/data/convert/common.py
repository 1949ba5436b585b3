"""What every converter shares: where a source item is, what could not be converted, finding videos by id.

A converter reads its source file and yields, for each source item, either annotation records
(plain dicts in vidlab's format) or a `Problem` saying why the item cannot become one. The driver
(`vidlab.data.convert.annotations`) validates every record with `vidlab.conversation.parse_record`, the
function training uses, so a record that is written is one training or evaluation will read.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vidlab.annotations import TEXT_ENCODING, read_records
from vidlab.errors import AnnotationConversionError

# What FFmpeg reads that data sets ship videos as; the first is assumed when no --data-root is given.
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".gif")
_PLACEHOLDER = re.compile(r"<(image|video|audio)>")


class MediaMissing(ValueError):
    """A source item whose video or image is not under the data root (a wrong --data-root makes every item one)."""


@dataclass(frozen=True)
class Problem:
    """A source item that was not converted: where it is (file:line, file row N, or file:key[index]) and why.

    `kind` is "missing media" (the file is not under the data root) or "invalid" (anything else).
    """

    source: str
    reason: str
    kind: str = "invalid"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Item:
    """One source item: where it is, and the records made from it (or the problem)."""

    source: str
    records: list[dict] = field(default_factory=list)
    problem: str | None = None
    notes: list[str] = field(default_factory=list)
    problem_kind: str = "invalid"


def failed(where: str, err: Exception) -> Item:
    """The Item for a source item a converter could not use (the error's words, without the place)."""
    return Item(where, problem=str(err).removeprefix(f"{where}: "),
                problem_kind="missing media" if isinstance(err, MediaMissing) else "invalid")


def json_items(path: Path) -> Iterator[tuple[str, Any]]:
    """(place, item) for each item of a JSON list or JSONL file; a broken JSONL line yields its error.

    The place is the record's own (`vidlab.annotations.Position`): file:line, with the record's
    number where a JSON list holds several records on one line.
    """
    for record in read_records(path):
        yield str(record.position), record.item


def load_json_object(path: Path, what: str) -> Any:
    """A whole JSON file (for formats that are one object, such as MSR-VTT's)."""
    try:
        return json.loads(path.read_text(encoding=TEXT_ENCODING))
    except UnicodeDecodeError as err:
        raise AnnotationConversionError(f"{path}: not UTF-8 text ({err.reason}). Save the file as UTF-8.") from err
    except json.JSONDecodeError as err:
        raise AnnotationConversionError(f"{path}:{err.lineno}: not valid JSON ({err.msg}). Is this {what}?") from err


def count_placeholders(text: str) -> dict[str, int]:
    counts = {"image": 0, "video": 0, "audio": 0}
    for match in _PLACEHOLDER.finditer(text):
        counts[match.group(1)] += 1
    return counts


def text_of(value: Any, name: str) -> str:
    """A non-empty string field, or ValueError naming it."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} is empty")
    return value


def path_list(value: Any, name: str) -> list[str]:
    """A path or a list of paths (strings), as the source formats give media."""
    values = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        raise ValueError(f'"{name}" must be a path or a list of paths, got {value!r}')
    return list(values)


def media_record(item_id: Any, videos: list[str], images: list[str]) -> dict:
    """The start of a vidlab record: its id (when the source has one) and its media lists (when not empty)."""
    record: dict = {}
    if item_id is not None:
        record["id"] = str(item_id)
    if videos:
        record["video"] = videos
    if images:
        record["image"] = images
    return record


class VideoFinder:
    """Finds a data set's video files by id under a data root (once indexed), or assumes a file name.

    Data sets that name videos by id (MSR-VTT's video0, ActivityNet's v_xxx, MSVD's clip names) ship
    them in various folders and containers (.mp4, .avi, .mkv, .webm). With a data root, every video
    file under it is indexed once by its name without suffix; without one, `<id><default_suffix>`
    is assumed and not checked.
    """

    def __init__(self, root: Path | None, default_suffix: str = ".mp4"):
        self.root = root
        self.default_suffix = default_suffix
        self._index: dict[str, list[str]] | None = None

    def _build(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        assert self.root is not None
        for folder, _, names in os.walk(self.root):
            for name in names:
                stem, suffix = os.path.splitext(name)
                if suffix.lower() in VIDEO_SUFFIXES:
                    relative = os.path.relpath(os.path.join(folder, name), self.root)
                    index.setdefault(stem, []).append(Path(relative).as_posix())
        for paths in index.values():
            paths.sort(key=lambda p: (p.count("/"), p))  # the shallowest, then alphabetical, first
        return index

    def find(self, video_id: str) -> str | None:
        """The video's path relative to the root (None: not there), or `<id><suffix>` without a root."""
        if self.root is None:
            return video_id + self.default_suffix
        if self._index is None:
            self._index = self._build()
        found = self._index.get(video_id)
        return found[0] if found else None

    def exists(self, path: str) -> bool:
        return self.root is None or (self.root / path).exists()

    def missing(self, video_id: str) -> str:
        return (f"no video file named {video_id} (any of {', '.join(VIDEO_SUFFIXES[:5])}, ...) under the data root "
                f"{self.root}. Download it, or leave the record out")


def caption_records(
    video: str,
    captions: list[str],
    record_id: str,
    prompt: str,
    mode: str,
    extra: dict | None = None,
) -> list[dict]:
    """Records for a captioned video: one per caption (mode "train") or one with every caption as a
    reference (mode "eval": the record ends with the question and lists the answers in "references")."""
    question = {"from": "human", "value": f"<video>\n{prompt}"}
    base = {"video": [video], **(extra or {})}
    if mode == "eval":
        return [{"id": record_id, **base, "conversations": [question], "references": list(captions)}]
    return [
        {"id": f"{record_id}#{n}", **base, "conversations": [question, {"from": "gpt", "value": caption}]}
        for n, caption in enumerate(captions, start=1)
    ]


CAPTION_MODES = ("train", "eval")
