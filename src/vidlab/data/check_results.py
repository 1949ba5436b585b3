"""The check's per-record results held as arrays (46 bytes a record), and its output files read lazily.

`Results` keeps, per record, whether it is usable, its sizes (one numpy column each) or its kind and
reason (texts kept once each: many records share one reason), and whether it came from the cache.
`JsonlRows` is bad.jsonl or samples.jsonl as a sequence of dicts, read from the file when used.
"""

from __future__ import annotations

import array
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

UNSET, OK, BAD = 0, 1, 2
# The integer sizes of a usable record, in the order samples.jsonl writes them (duration comes first).
_SIZES = ("frames", "visual_tokens", "visual_tokens_before_pruning", "text_tokens", "label_tokens", "total_tokens")


class _Texts:
    """Each distinct text once, by number (kinds, reasons and "shrunk" notes repeat across records)."""

    def __init__(self):
        self.numbers: dict[str, int] = {}
        self.texts: list[str] = []

    def number(self, text: str) -> int:
        found = self.numbers.get(text)
        if found is None:
            found = self.numbers[text] = len(self.texts)
            self.texts.append(text)
        return found


class Results:
    """What the check found for each of `count` records (see the module's docstring)."""

    def __init__(self, count: int):
        self.state = np.zeros(count, dtype=np.uint8)
        self.cached = np.zeros(count, dtype=bool)
        self.duration = np.full(count, np.nan)
        self.sizes = np.full((count, len(_SIZES)), -1, dtype=np.int32)  # -1: none (frames of a text sample)
        self.shrunk = np.full(count, -1, dtype=np.int32)
        self.kind = np.full(count, -1, dtype=np.int32)
        self.reason = np.full(count, -1, dtype=np.int32)
        self._texts = _Texts()

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.state, self.cached, self.duration, self.sizes, self.shrunk, self.kind,
                                      self.reason))

    def put(self, i: int, result: dict, cached: bool = False) -> None:
        """Record i's result: `check_sample.measure`'s dict (ok with its sizes, or kind and reason)."""
        self.cached[i] = cached
        if not result["ok"]:
            self.state[i] = BAD
            self.kind[i] = self._texts.number(result["kind"])
            self.reason[i] = self._texts.number(result["reason"])
            return
        self.state[i] = OK
        if result.get("duration") is not None:
            self.duration[i] = result["duration"]
        for column, key in enumerate(_SIZES):
            value = result.get(key)
            if value is not None:
                self.sizes[i, column] = value
        if result.get("shrunk") is not None:
            self.shrunk[i] = self._texts.number(result["shrunk"])

    def sample(self, i: int) -> dict:
        """A usable record's sizes, as samples.jsonl writes them after the record's place."""
        row = {"duration": None if np.isnan(self.duration[i]) else float(self.duration[i])}
        for key, value in zip(_SIZES, self.sizes[i].tolist()):
            if value >= 0 or key != "label_tokens":  # (a result cached before label counts has none)
                row[key] = value if value >= 0 else None
        row["shrunk"] = self._texts.texts[self.shrunk[i]] if self.shrunk[i] >= 0 else None
        return row

    def failure(self, i: int) -> tuple[str, str]:
        """A bad record's kind and reason."""
        return self._texts.texts[self.kind[i]], self._texts.texts[self.reason[i]]

    def values(self, key: str, keep: np.ndarray) -> np.ndarray:
        """One measure over the records where `keep` is set, those without it (None) left out."""
        if key == "duration":
            column = self.duration[keep]
            return column[~np.isnan(column)]
        column = self.sizes[keep, _SIZES.index(key)]
        return column[column >= 0]


class JsonlRows(Sequence[dict]):
    """A JSONL file the check wrote, as a sequence of dicts read from it when used (equal to a list of the
    same dicts); `len` and item access index the file's lines on first use (8 bytes a line)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._starts: array.array | None = None

    def __iter__(self) -> Iterator[dict]:
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)

    def _index(self) -> array.array:
        if self._starts is None:
            starts, at = array.array("q"), 0
            with open(self.path, "rb") as handle:
                for line in handle:
                    if line.strip():
                        starts.append(at)
                    at += len(line)
            self._starts = starts
        return self._starts

    def __len__(self) -> int:
        return len(self._index())

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        starts = self._index()
        if not -len(starts) <= i < len(starts):
            raise IndexError(f"row {i} of {len(starts)} in {self.path}")
        with open(self.path, "rb") as handle:
            handle.seek(starts[i])
            return json.loads(handle.readline())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, JsonlRows)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"JsonlRows({str(self.path)!r})"
