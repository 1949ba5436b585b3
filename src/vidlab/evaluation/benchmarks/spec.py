"""What vidlab knows about a benchmark: its files, where to get them, how to read and score them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vidlab.evaluation.records import EvalSet


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

    @property
    def default_split(self) -> str:
        return self.splits[0]
