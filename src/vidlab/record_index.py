"""Where each record of an annotation file is, so a million-record file is never held parsed in memory.

`RecordReader(path)` reads a JSON list or JSONL file in one streaming pass (a few MiB of text at a
time), yielding each record (`vidlab.annotations.RawRecord`) as it is found, and leaves behind a
`RecordIndex`: the byte span, starting line and shared-line flag of every record, four numbers a
record. The index reads record i back from the file when asked (`index[i]`: one `pread` and one
`json.loads`), so training keeps only the index and its data-loader workers share it.

An index of a large file is saved in the index cache (`$VIDLAB_CACHE_DIR/record-index`, default
`~/.cache/vidlab/record-index`) under the file's path, size and modification time, and read back
memory-mapped: a second run (and every worker of it) starts without reading the file, and all
processes share one copy of the index in the page cache. A changed file gets a new index.
"""

from __future__ import annotations

import array
import codecs
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidlab.annotations import Position, RawRecord
from vidlab.errors import DataFileError, RecordError

CACHE_MIN_BYTES = 8 << 20  # smaller files are re-read faster than an index file is looked up and written
_CHUNK = 4 << 20  # bytes read at a time while scanning
_SPACE = " \t\r\n"
_DTYPE = np.dtype([("start", "<i8"), ("end", "<i8"), ("line", "<i8"), ("shared", "?"), ("jsonl", "?")])
_BOM = codecs.BOM_UTF8


def cache_dir() -> Path:
    root = os.environ.get("VIDLAB_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "vidlab"
    return Path(root).expanduser() / "record-index"


def _cache_file(path: Path) -> Path:
    stat = path.stat()
    key = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return cache_dir() / f"{path.name}.{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"


def _not_utf8(path: Path, err: UnicodeDecodeError) -> DataFileError:
    hint = " A parquet file (LLaVA-OneVision-Data's) converts to records with `vidlab data convert llava FILE " \
        "OUT.jsonl`." if path.suffix.lower() == ".parquet" else " Save the file as UTF-8."
    return DataFileError(f"{path}: not UTF-8 text ({err.reason}).{hint}")


def _not_json(position: Position, err: json.JSONDecodeError) -> RecordError:
    return RecordError(f"{position}: not valid JSON ({err.msg}: column {err.colno}). Fix the line or remove it.",
                       "not json")


class RecordIndex(Sequence[RawRecord]):
    """The records of one annotation file, read from it one at a time when asked.

    Pickles as its file's path and the index's (a path, where it is cached): a data-loader worker
    receives a few hundred bytes, not the records.
    """

    def __init__(self, path: Path, table: np.ndarray, saved: Path | None = None):
        self.path = path
        self.table = table
        self.saved = saved  # the cache file the table is memory-mapped from, if any
        self._handle: int | None = None

    @classmethod
    def cached(cls, path: str | Path) -> RecordIndex | None:
        """The saved index of this file as it is now (same size and modification time), or None."""
        path = Path(path)
        try:
            saved = _cache_file(path)
            table = np.load(saved, mmap_mode="r")
        except (OSError, ValueError):
            return None
        return cls(path, table, saved) if table.dtype == _DTYPE else None

    @classmethod
    def of(cls, path: str | Path) -> RecordIndex:
        """The file's index: the saved one, or built by one pass over the file (and saved if the file is large)."""
        found = cls.cached(path)
        if found is not None:
            return found
        reader = RecordReader(path, parse=False)
        for _ in reader:
            pass
        return reader.index

    def __len__(self) -> int:
        return len(self.table)

    def position(self, i: int) -> Position:
        row = self.table[i]
        return Position(self.path, int(i), int(row["line"]), bool(row["shared"]))

    def text(self, i: int) -> str:
        """Record i's JSON text, as it is in the file."""
        row = self.table[i]
        if self._handle is None:
            self._handle = os.open(self.path, os.O_RDONLY)
        start, end = int(row["start"]), int(row["end"])
        return os.pread(self._handle, end - start, start).decode("utf-8")

    def __getitem__(self, i: int) -> RawRecord:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(f"record {i} of {len(self)}")
        i = i % len(self)
        position = self.position(i)
        try:
            return RawRecord(position, json.loads(self.text(i)))
        except json.JSONDecodeError as err:  # only JSONL lines can be broken: a broken JSON list does not index
            return RawRecord(position, _not_json(position, err))

    def __iter__(self) -> Iterator[RawRecord]:
        for i in range(len(self)):
            yield self[i]

    def close(self) -> None:
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None

    def __del__(self):
        self.close()

    def __getstate__(self) -> dict:
        table = None if self.saved is not None else self.table
        return {"path": self.path, "saved": self.saved, "table": table}

    def __setstate__(self, state: dict) -> None:
        self.path, self.saved, self._handle = state["path"], state["saved"], None
        self.table = state["table"] if state["table"] is not None else np.load(self.saved, mmap_mode="r")


class RecordReader:
    """One pass over an annotation file: iterate to get its records; afterwards `.index` locates each one.

    With parse=False the records come back with item None (only the index is wanted). A saved index
    of the unchanged file is used instead of scanning it.
    """

    def __init__(self, path: str | Path, parse: bool = True):
        self.path = Path(path)
        self.parse = parse
        self.index: RecordIndex | None = None
        self._starts, self._ends, self._lines = array.array("q"), array.array("q"), array.array("q")

    def __iter__(self) -> Iterator[RawRecord]:
        cached = RecordIndex.cached(self.path) if self.path.stat().st_size >= CACHE_MIN_BYTES else None
        if cached is not None:
            self.index = cached
            if self.parse:
                yield from cached
            return
        with open(self.path, "rb") as handle:
            head = handle.read(_CHUNK)
            offset = len(_BOM) if head.startswith(_BOM) else 0
            try:
                first = codecs.getincrementaldecoder("utf-8")().decode(head[offset:], final=False).lstrip()
            except UnicodeDecodeError as err:
                raise _not_utf8(self.path, err) from err
            if not first:
                if len(head) - offset < _CHUNK:
                    raise DataFileError(f"{self.path}: the file is empty. Give a JSON list or JSONL file of records.")
            handle.seek(0)
            is_jsonl = self.path.suffix.lower() == ".jsonl"
            if first.startswith("[") and not is_jsonl:
                yield from self._json_list(handle, offset)
                jsonl = False
            else:
                if first.startswith("{") and not is_jsonl:
                    self._refuse_one_object(first)
                yield from self._jsonl(handle, offset)
                jsonl = True
        self._finish(jsonl)

    def _refuse_one_object(self, head: str) -> None:
        line = head.split("\n", 1)[0]
        try:
            json.loads(line)
            return  # a whole record on the first line: JSONL
        except json.JSONDecodeError:
            pass
        try:  # a first line that is not a whole record: the file may be one pretty-printed object
            text = self.path.read_text(encoding="utf-8-sig")
            whole = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return
        if isinstance(whole, dict) and "\n" in text.strip():
            raise DataFileError(
                f"{self.path}: holds one JSON object, not a list of records. Put the records in a JSON list "
                "([{...}, {...}]) or in JSONL (one record per line)."
            )

    def _jsonl(self, handle, offset: int) -> Iterator[RawRecord]:
        at = 0
        for number, raw in enumerate(handle, start=1):
            start, at = at, at + len(raw)
            if number == 1:
                start += offset
                raw = raw[offset:]
            body = raw[:-1] if raw.endswith(b"\n") else raw
            try:
                line = body.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(self.path, err) from err
            if not line.strip():
                continue
            position = Position(self.path, len(self._starts), number)
            self._starts.append(start)
            self._ends.append(start + len(body))
            self._lines.append(number)
            if not self.parse:
                yield RawRecord(position, None)
                continue
            try:
                yield RawRecord(position, json.loads(line))
            except json.JSONDecodeError as err:
                yield RawRecord(position, _not_json(position, err))

    def _json_list(self, handle, offset: int) -> Iterator[RawRecord]:
        # The json module gives no positions for list items, so walk the list item by item: each item is
        # decoded from a window of the text (a few MiB read at a time), and its byte span and line noted.
        decoder = json.JSONDecoder()
        window = _TextWindow(handle, offset, self.path)
        pos = window.skip_space(0)
        pos += 1  # the "[" (checked by the caller)
        pending: tuple[Position, Any] | None = None  # held back one record: is its line shared with the next?
        while True:
            pos = window.skip_space(pos)
            if pos < len(window.buf) and window.buf[pos] == "]":
                break
            line = window.line_at(pos)
            while True:
                try:
                    item, end = decoder.raw_decode(window.buf, pos)
                    if end < len(window.buf) or window.eof:  # (a number at the window's end may go on)
                        break
                    shift = window.more()
                    pos -= shift or 0
                    continue
                except json.JSONDecodeError as err:
                    shift = window.more()
                    if shift is not None:  # the record may go on past the window: read more and try again
                        pos -= shift
                        continue
                    raise DataFileError(
                        f"{self.path}:{window.line_at(err.pos)}: not valid JSON ({err.msg}). In a JSON list nothing "
                        "after a break can be read: fix it, or use JSONL (one record per line), where a bad line "
                        "only skips that record."
                    ) from err
            self._starts.append(window.byte_at(pos))
            self._ends.append(window.byte_at(end))
            self._lines.append(line)
            position = Position(self.path, len(self._starts) - 1, line)
            if pending is not None:
                yield self._shared(pending, line)
            pending = (position, item if self.parse else None)
            pos = window.skip_space(end)
            if pos < len(window.buf) and window.buf[pos] == ",":
                pos += 1
            elif pos >= len(window.buf) or window.buf[pos] != "]":
                raise DataFileError(f"{self.path}:{window.line_at(pos)}: expected ',' or ']' after a record. Fix the "
                                    "JSON list.")
        if pending is not None:
            yield self._shared(pending, None)

    def _shared(self, pending: tuple[Position, Any], next_line: int | None) -> RawRecord:
        position, item = pending
        i = position.index
        shared = (i > 0 and self._lines[i - 1] == position.line) or next_line == position.line
        return RawRecord(Position(position.file, i, position.line, shared), item)

    def _finish(self, jsonl: bool) -> None:
        table = np.zeros(len(self._starts), dtype=_DTYPE)
        table["start"], table["end"], table["line"] = self._starts, self._ends, self._lines
        if not jsonl and len(table):
            lines = table["line"]
            same = lines[1:] == lines[:-1]
            table["shared"][1:] |= same
            table["shared"][:-1] |= same
        table["jsonl"] = jsonl
        saved = None
        if self.path.stat().st_size >= CACHE_MIN_BYTES:
            saved = _save(self.path, table)
            if saved is not None:
                table = np.load(saved, mmap_mode="r")
        self.index = RecordIndex(self.path, table, saved)


class _TextWindow:
    """The file's text a few MiB at a time. Positions are indexes into `buf`; reading more drops the text
    before `mark` (the end of the last record indexed), so `more` returns how far positions moved."""

    def __init__(self, handle, offset: int, path: Path):
        handle.seek(offset)
        self.handle, self.path = handle, path
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.eof = "", False
        self.mark, self.mark_byte = 0, offset  # a place in buf and its byte offset in the file
        self.line_pos, self.line_no = 0, 1  # a place in buf and the line it is on
        self.more()

    def more(self) -> int | None:
        """Read on; the shift of every position, or None at the end of the file."""
        if self.eof:
            return None
        chunk = self.handle.read(_CHUNK)
        self.eof = not chunk
        try:
            added = self.decoder.decode(chunk, final=self.eof)
        except UnicodeDecodeError as err:
            raise _not_utf8(self.path, err) from err
        shift = self.mark
        if self.line_pos >= shift:
            self.line_pos -= shift
        else:
            self.line_no += self.buf.count("\n", self.line_pos, shift)
            self.line_pos = 0
        self.buf, self.mark = self.buf[shift:] + added, 0
        return shift

    def skip_space(self, at: int) -> int:
        while True:
            while at < len(self.buf) and self.buf[at] in _SPACE:
                at += 1
            if at < len(self.buf):
                return at
            shift = self.more()
            if shift is None:
                return at
            at -= shift

    def line_at(self, at: int) -> int:
        """The line of buf[at]; `at` never goes back before an earlier call's."""
        self.line_no += self.buf.count("\n", self.line_pos, at)
        self.line_pos = at
        return self.line_no

    def byte_at(self, at: int) -> int:
        """The byte offset of buf[at]; `at` never goes back before an earlier call's."""
        self.mark_byte += len(self.buf[self.mark:at].encode("utf-8"))
        self.mark = at
        return self.mark_byte


def _save(path: Path, table: np.ndarray) -> Path | None:
    """The index written (atomically) into the cache; None where the cache folder cannot be written."""
    target = _cache_file(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        with open(partial, "wb") as handle:
            np.save(handle, table)
        os.replace(partial, target)
    except OSError:
        return None
    return target


__all__ = ["CACHE_MIN_BYTES", "RecordIndex", "RecordReader", "cache_dir"]
