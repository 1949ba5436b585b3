"""Files written for the user (replaced atomically, or appended line by line) and JSON / JSONL reading."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from vidlab.errors import DataFileError

# UTF-8, with or without the byte-order mark some Windows editors put at the start.
TEXT_ENCODING = "utf-8-sig"


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write to a temporary name in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    return write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    return write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def save_figure(figure, path: str | Path) -> Path:
    """A matplotlib figure saved as PNG, atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    try:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class LineAppender:
    """Appends one JSON object per line and flushes each, so a killed run keeps every finished line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> LineAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_jsonl(path: str | Path, *, torn_tail_ok: bool = False) -> list[dict]:
    """The JSON objects of a JSONL file, one per non-blank line.

    Args:
        torn_tail_ok: drop a last line that a killed writer left half written (no newline at the
            end and not valid JSON) instead of failing. Lines before it must be whole.
    """
    path = Path(path)
    text = path.read_text(encoding=TEXT_ENCODING)
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if torn_tail_ok and number == len(lines):
                break  # the last line had no newline: a write that was cut off
            raise DataFileError(
                f"{path}:{number}: not a JSON object ({err.msg}). Fix or delete that line and run again."
            ) from err
        if not isinstance(row, dict):
            raise DataFileError(f"{path}:{number}: expected a JSON object per line. Fix or delete that line.")
        rows.append(row)
    return rows


def reason_of(err: Exception, where: str) -> str:
    """The error message without the leading `where: ` (skipped.jsonl has the place in its own field)."""
    message = str(err)
    return message[len(where) + 2 :] if message.startswith(f"{where}: ") else message


def iter_json_items(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, item) for each record of a JSON list or JSONL file.

    A JSONL line that is not valid JSON yields (line, DataFileError) so the caller can skip
    that record and go on. A broken JSON list cannot be read past the break and raises.
    """
    try:
        text = path.read_text(encoding=TEXT_ENCODING)
    except UnicodeDecodeError as err:
        raise DataFileError(f"{path}: not UTF-8 text ({err.reason}). Save the file as UTF-8.") from err
    stripped = text.lstrip()
    if not stripped:
        raise DataFileError(f"{path}: the file is empty. Give a JSON list or JSONL file of records.")
    if stripped[0] == "[" and path.suffix.lower() != ".jsonl":
        yield from _iter_json_list(path, text)
        return
    if stripped[0] == "{" and path.suffix.lower() != ".jsonl":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, dict) and "\n" in text.strip():
            raise DataFileError(
                f"{path}: holds one JSON object, not a list of records. Put the records in a JSON list "
                "([{...}, {...}]) or in JSONL (one record per line)."
            )
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            yield number, DataFileError(
                f"{path}:{number}: not valid JSON ({err.msg}: column {err.colno}). Fix the line or remove it."
            )


def _iter_json_list(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    # The json module gives no positions for list items, so walk the list item by item to know each one's line.
    decoder = json.JSONDecoder()
    pos, line, counted = text.index("[") + 1, 1, 0

    def skip_space(at: int) -> int:
        while at < len(text) and text[at] in " \t\r\n":
            at += 1
        return at

    while True:
        pos = skip_space(pos)
        if pos < len(text) and text[pos] == "]":
            return
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise DataFileError(
                f"{path}:{err.lineno}: not valid JSON ({err.msg}). In a JSON list nothing after a break can be "
                "read: fix it, or use JSONL (one record per line), where a bad line only skips that record."
            ) from err
        yield line, item
        pos = skip_space(pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos >= len(text) or text[pos] != "]":
            line += text.count("\n", counted, pos)
            raise DataFileError(f"{path}:{line}: expected ',' or ']' after a record. Fix the JSON list.")
