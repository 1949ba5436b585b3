"""Annotation files -> records, each with a position that is its own.

Training, evaluation, `vidlab data check` and `vidlab data convert` all read annotation files
(a JSON list, as `json.dump` writes it, often on one line; or JSONL, one record per line) here:

    for record in read_records(path):
        record.position   # file (as given), index in the file, line its JSON starts on
        record.item       # the parsed JSON value, or a RecordError (kind "not json") for a broken line
        record.id         # the record's "id", or the one default-id rule (`default_id`)

Several records of a JSON list can start on the same line, so a position is (file, index) and the
line only helps the reader find it: `str(position)` is `file:line`, and `file:line (record N)` where
several records start on that line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# UTF-8, with or without the byte-order mark some Windows editors put at the start.
TEXT_ENCODING = "utf-8-sig"


@dataclass(frozen=True)
class Position:
    """Where a record is: its file (the path as given), its index among the file's records (from 0),
    the line its JSON starts on, and whether other records start on that line too."""

    file: Path
    index: int
    line: int
    shared_line: bool = False

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" + (f" (record {self.index + 1})" if self.shared_line else "")

    def to_dict(self) -> dict:
        return {"file": str(self.file), "index": self.index, "line": self.line}

    @property
    def default_id(self) -> str:
        """The id of a record without one, unique within its file (evaluation keys predictions on ids): the file's
        name and the line, and the record's number where several records start on that line."""
        return f"{self.file.name}:{self.line}" + (f"#{self.index + 1}" if self.shared_line else "")


def given_id(item: Any) -> str | None:
    """The record's own "id" as a string, if it has one."""
    return str(item["id"]) if isinstance(item, dict) and item.get("id") is not None else None


def record_id(item: Any, position: Position) -> str:
    """The one record-id rule: the record's "id", else its position's default id."""
    return given_id(item) or position.default_id


@dataclass(frozen=True)
class RawRecord:
    """One record as read from its file, before it is validated."""

    position: Position
    item: Any  # the parsed JSON value, or the RecordError that says why the line is not JSON

    @property
    def id(self) -> str:
        return record_id(self.item, self.position)

    @property
    def given_id(self) -> str | None:
        return given_id(self.item)


def reason_of(err: Exception, where: object) -> str:
    """The error message without the leading `where: ` (reports give the place in fields of their own)."""
    message, prefix = str(err), f"{where}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def read_records(path: str | Path) -> Iterator[RawRecord]:
    """Each record of a JSON list or JSONL file, with its position, read in one streaming pass
    (`vidlab.record_index.RecordReader`, which also leaves the file's index behind).

    A JSONL line that is not valid JSON comes back as a record whose item is a RecordError (kind
    "not json"), so the caller can skip that record and go on.

    Raises:
        DataFileError: the file is empty, not UTF-8, one JSON object, or a JSON list broken part way
            (nothing after the break can be read).
    """
    from vidlab.record_index import RecordReader  # it builds on this module's Position and RawRecord

    yield from RecordReader(path)


__all__ = ["Position", "RawRecord", "TEXT_ENCODING", "given_id", "read_records", "reason_of", "record_id"]
