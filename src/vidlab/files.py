"""Files written for the user (replaced atomically, or appended line by line) and JSON / JSONL reading."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from vidlab.annotations import TEXT_ENCODING, reason_of  # noqa: F401 - imported from here too
from vidlab.errors import DataFileError


def write_atomic(path: str | Path, data: str | bytes | Iterable[bytes]) -> Path:
    """Write to a temporary name in the same folder, then rename: readers never see half a file.
    `data` may be pieces written one after another (a large file never held whole)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, (str, bytes)):
                handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            else:
                handle.writelines(data)
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


def iter_json_items(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, item) for each record of a JSON list or JSONL file (`vidlab.annotations.read_records`
    without the record's index: for files whose records each start on a line of their own)."""
    from vidlab.annotations import read_records

    for record in read_records(path):
        yield record.position.line, record.item
