"""What vidlab knows about a benchmark: its files, where to get them, how to read and score them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidlab.evaluation.records import EvalSet

# (response, option texts) -> the option letter it picks, or None when it names none.
LetterReader = Callable[[str, Sequence[str]], "str | None"]
# (response, prediction row) -> (right, readable) for a benchmark's own right/wrong rule (kind "match").
MatchReader = Callable[[str, dict], "tuple[bool, bool]"]


@dataclass(frozen=True)
class DataFormat:
    """A benchmark's annotation file read on its own (`--data PATH --format NAME`, or found by `auto`).

    Attributes:
        name: what `--format` takes.
        read: (path, data_root or None, subtitles) -> EvalSet.
        detect: (path, first record or None) -> whether the file or folder is in this format: called with
            None for the path alone (a folder, a task file's name), then with the file's first record.
        columns: the parquet columns that make a parquet file this format (empty: it reads no parquet).
        folders: whether a folder (of task files) is read too.
    """

    name: str
    read: Callable[[Path, Path | None, bool], EvalSet]
    detect: Callable[[Path, dict[str, Any] | None], bool]
    columns: tuple[str, ...] = ()
    folders: bool = False


@dataclass(frozen=True)
class Benchmark:
    """One benchmark as released.

    Attributes:
        name: what `--benchmark` takes.
        title: the benchmark's own name.
        task: multiple choice, temporal grounding, open-ended QA or captioning.
        folder: its folder under a root laid out as VideoLLaMA3's README shows (`--benchmark all`).
        download: where to get the files.
        layout: the files and folders `--root` must hold, as a tree.
        splits: the splits it can read; the first is the default.
        load: (root, split, subtitles) -> EvalSet; raises BenchmarkLayoutError on a folder that does not match.
        groups: the labels accuracy is broken down by, in the benchmark's order.
        headline: the metrics the benchmark reports, first the main one.
        subtitles: whether `--subtitles` applies.
        submission: writes the file the benchmark's server takes from the scored rows, into a folder;
            returns the paths written.
        notes: what differs from VideoLLaMA3's evaluation or the official scorer, and why.
        read_answer: multiple choice: the option letter an answer picks, by VideoLLaMA3's rule for the benchmark.
        data_format: its annotation file as a `--format` of `vidlab eval run --data` (None: only --benchmark).
        read_match: records of kind "match": whether an answer is right by the benchmark's own rule, and
            whether it could be read at all.
    """

    name: str
    title: str
    task: str
    folder: str
    download: str
    layout: str
    splits: tuple[str, ...]
    load: Callable[[Path, str, bool], EvalSet]
    groups: tuple[str, ...] = ()
    headline: tuple[str, ...] = ("accuracy",)
    subtitles: bool = False
    submission: Callable[[list[dict], Path], list[Path]] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    read_answer: LetterReader | None = None
    data_format: DataFormat | None = None
    read_match: MatchReader | None = None

    @property
    def default_split(self) -> str:
        return self.splits[0]
