"""The benchmarks vidlab reads in their published layout, one module per benchmark family.

    from vidlab.evaluation.benchmarks import BENCHMARKS, load_benchmark
    data = load_benchmark("mvbench", "benchmarks/video/mvbench")

The eleven video benchmarks VideoLLaMA3 reports are asked with its prompts and read with its answer
rules (each module's reader); four caption sets (MSR-VTT, MSVD, VATEX, YouCook2) are scored with
the COCO caption metrics.

Adding a benchmark is adding a module here that defines a `Benchmark` (spec.py): it is found by
looking through this package, its answer reader and its `--format` come with it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from pathlib import Path

from vidlab.errors import EvaluationError
from vidlab.evaluation.accuracy import accuracy_table
from vidlab.evaluation.answers import LETTERS, extract_letter
from vidlab.evaluation.benchmarks.choice import choice_prompt, load_choices
from vidlab.evaluation.benchmarks.common import BenchmarkLayoutError, drop_duplicate_ids
from vidlab.evaluation.benchmarks.mvbench import MLVU_TASKS, MVBENCH_TASKS, load_mlvu, load_mvbench, mvbench_prompt
from vidlab.evaluation.benchmarks.spec import Benchmark, DataFormat, LetterReader, MatchReader
from vidlab.evaluation.benchmarks.videomme import load_videomme, videomme_prompt
from vidlab.evaluation.records import EvalSet

_SHARED = {"common", "spec", "choice"}  # modules of helpers, not of a benchmark


def _discover() -> list[Benchmark]:
    found: dict[str, Benchmark] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name in _SHARED:
            continue
        for value in vars(importlib.import_module(f"{__name__}.{module.name}")).values():
            if isinstance(value, Benchmark):
                found.setdefault(value.name, value)
    return sorted(found.values(), key=lambda b: b.name)


VIDEO_BENCHMARKS: tuple[Benchmark, ...] = tuple(b for b in _discover() if b.task != "captioning")
CAPTION_BENCHMARKS: tuple[Benchmark, ...] = tuple(b for b in _discover() if b.task == "captioning")
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (*VIDEO_BENCHMARKS, *CAPTION_BENCHMARKS)}
# The answer readers by name: vidlab's own, and each benchmark's (rows of predictions.jsonl name theirs).
LETTER_READERS: dict[str, LetterReader] = {
    "vidlab": extract_letter, **{b.name: b.read_answer for b in BENCHMARKS.values() if b.read_answer}
}

__all__ = [
    "BENCHMARKS", "CAPTION_BENCHMARKS", "LETTERS", "LETTER_READERS", "MLVU_TASKS", "MVBENCH_TASKS", "VIDEO_BENCHMARKS",
    "Benchmark", "BenchmarkLayoutError", "DataFormat", "accuracy_table", "choice_prompt", "data_formats",
    "extract_letter", "get_benchmark", "letter_reader", "load_benchmark", "load_choices", "load_mlvu", "load_mvbench",
    "load_videomme", "match_reader", "mvbench_prompt", "read_letter", "videomme_prompt",
]


def data_formats() -> list[tuple[Benchmark, DataFormat]]:
    """The benchmarks whose annotation files `--data --format` reads, with their format (in the order `--format`
    has always listed them: videomme, mvbench, mlvu)."""
    found = [(b, b.data_format) for b in BENCHMARKS.values() if b.data_format is not None]
    return sorted(found, key=lambda pair: pair[1].name, reverse=True)


def letter_reader(scoring: dict) -> LetterReader:
    """The reader for a prediction row's `scoring`: its benchmark's, else the one it names, else vidlab's."""
    benchmark = BENCHMARKS.get(str(scoring.get("benchmark")))
    if benchmark is not None and benchmark.read_answer is not None:
        return benchmark.read_answer
    return LETTER_READERS.get(str(scoring.get("reader")), extract_letter)


def match_reader(scoring: dict) -> MatchReader:
    """The right/wrong rule for a prediction row of kind "match": its benchmark's `read_match`."""
    benchmark = BENCHMARKS.get(str(scoring.get("benchmark")))
    if benchmark is None or benchmark.read_match is None:
        raise EvaluationError(f"no right/wrong rule for benchmark {scoring.get('benchmark')!r} (a prediction of kind "
                              '"match" names its benchmark in "scoring"). Score a predictions.jsonl written by '
                              "`vidlab eval run --benchmark`.")
    return benchmark.read_match


def read_letter(response: str, options: Sequence[str], reader: str = "vidlab") -> str | None:
    """The option letter `response` picks under the named reader ("vidlab" or a benchmark's name)."""
    if reader not in LETTER_READERS:
        raise EvaluationError(f"unknown answer reader {reader!r}. Use one of: {', '.join(LETTER_READERS)}.")
    return LETTER_READERS[reader](response, options)


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called `name` (case and "-" ignored: "Video-MME" is videomme)."""
    key = name.strip().lower().replace("-", "").replace(" ", "")
    for benchmark in BENCHMARKS.values():
        if key in (benchmark.name.replace("_", ""), benchmark.name, benchmark.title.lower().replace("-", "")):
            return benchmark
    raise EvaluationError(f"unknown benchmark {name!r}. Use one of: {', '.join(BENCHMARKS)} (or all); "
                          "`vidlab eval benchmarks` lists them.")


def load_benchmark(name: str, root: str | Path, split: str | None = None, subtitles: bool = False) -> EvalSet:
    """Read a benchmark from its folder as released (see `vidlab eval benchmarks`).

    Args:
        name: a name from BENCHMARKS.
        root: the benchmark's folder.
        split: one of the benchmark's splits (None: its default).
        subtitles: put the subtitles before the question (Video-MME, LongVideoBench).

    Raises:
        BenchmarkLayoutError: the folder does not hold the files the benchmark ships, in their places;
            the message names what was expected where.
    """
    benchmark = get_benchmark(name)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise EvaluationError(f"{root}: no such folder. Give --root the {benchmark.title} folder "
                              f"(`vidlab eval benchmarks {benchmark.name}` shows its layout).")
    split = split or benchmark.default_split
    if split not in benchmark.splits:
        raise EvaluationError(f"{benchmark.title} has no split {split!r}. Use one of: {', '.join(benchmark.splits)}.")
    if subtitles and not benchmark.subtitles:
        raise EvaluationError(f"{benchmark.title} has no subtitles; leave out --subtitles.")
    return drop_duplicate_ids(benchmark.load(root, split, subtitles))
