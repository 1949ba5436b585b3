"""An evaluation set from a path: which format a file is in, and the loader that reads it.

Formats: annotation records (`records`), the general multiple-choice form (`choice`), and each
benchmark's own annotation files where its spec gives a `data_format` (Video-MME, MVBench, MLVU:
`vidlab.evaluation.benchmarks`); `auto` tells them apart from the path and the first record, and
asks for --format when it cannot. Whole benchmark folders are read with
`vidlab.evaluation.benchmarks.load_benchmark` (`--benchmark NAME --root DIR`).
"""

from __future__ import annotations

from pathlib import Path

from vidlab.errors import DataFileError, EvaluationError
from vidlab.evaluation.benchmarks import data_formats, load_choices
from vidlab.evaluation.benchmarks.common import drop_duplicate_ids, parquet_columns, read_json_lenient
from vidlab.evaluation.records import EvalSet, load_annotations
from vidlab.files import iter_json_items

__all__ = ["FORMATS", "detect_format", "drop_duplicate_ids", "load_eval_set"]

FORMATS = ("auto", "records", "choice", *(f.name for _, f in data_formats()))


def _ask() -> str:
    names = ", ".join(FORMATS[1:-1]) + f" or {FORMATS[-1]}"
    return f"Pass --format {names}, or read a whole benchmark folder with --benchmark NAME --root DIR " \
           "(`vidlab eval benchmarks` lists them)."


def _titles(pairs, joiner: str, suffix: str = "") -> str:
    return f" {joiner} ".join(f"{benchmark.title}{suffix}" for benchmark, _ in pairs)


def _parquet_format(path: Path) -> str:
    columns = set(parquet_columns(path))
    readers = [(b, f) for b, f in data_formats() if f.columns]
    matched = [f.name for _, f in readers if set(f.columns) <= columns]
    if len(matched) == 1:
        return matched[0]
    wanted = "; ".join(f"{b.title}: {', '.join(sorted(f.columns))}" for b, f in readers)
    raise EvaluationError(
        f"{path}: a parquet file whose columns ({', '.join(sorted(columns))}) are not "
        f"{_titles(readers, 'or', chr(39) + 's')} ({wanted}). {_ask()}"
    )


def _folder_format(path: Path) -> str:
    readers = [(b, f) for b, f in data_formats() if f.folders]
    matched = [(b, f) for b, f in readers if f.detect(path, None)]
    if len(matched) == 1:
        return matched[0][1].name
    if matched:
        what = f"task files of {'both ' if len(matched) == 2 else ''}{_titles(matched, 'and')}"
    else:
        what = f"no {_titles(readers, 'or')} task files"
    raise EvaluationError(f"{path}: a folder with {what}. {_ask()}")


def _first_items(path: Path):
    try:
        yield from iter_json_items(path)
    except DataFileError:
        # Hand-edited files (Video-MME's own result template) can carry trailing commas.
        whole = read_json_lenient(path)
        yield from enumerate(whole if isinstance(whole, list) else [whole], start=1)


def detect_format(path: Path) -> str:
    """records, choice or a benchmark's format, from the path and the file's first record.

    Raises:
        EvaluationError: the file or folder fits none of them, or more than one; the message asks for --format.
    """
    if path.suffix.lower() == ".parquet":
        return _parquet_format(path)
    if path.is_dir():
        return _folder_format(path)
    by_name = [f.name for _, f in data_formats() if f.detect(path, None)]
    if len(by_name) == 1:
        return by_name[0]
    try:  # read only up to the first record (a file may hold a million)
        first = next(((line, item) for line, item in _first_items(path) if isinstance(item, dict)), None)
    except DataFileError as err:
        raise EvaluationError(f"{err} {_ask()}") from err
    if first is None:
        raise EvaluationError(f"{path}: no readable record to tell the format from. {_ask()}")
    line, item = first
    if "conversations" in item:
        return "records"
    matched = [f.name for _, f in data_formats() if f.detect(path, item)]
    if len(matched) == 1:
        return matched[0]
    if not matched and "options" in item and "question" in item:
        return "choice"
    raise EvaluationError(
        f"{path}:{line}: cannot tell the data format from this record (keys: {', '.join(sorted(item))}). {_ask()}"
    )


def load_eval_set(
    path: str | Path, data_root: str | Path | None = None, format: str = "auto", subtitles: bool = False
) -> EvalSet:
    """Read an evaluation data set in any supported format.

    Args:
        path: annotation records (JSON/JSONL), a multiple-choice file, or a benchmark's own annotation file
            (FORMATS: Video-MME's JSON, JSONL or released parquet; MVBench's or MLVU's `json/` folder or one
            task's JSON).
        data_root: folder that media paths are relative to (default: per format, see docs/evaluate.md).
        format: auto, records, choice, or a benchmark format's name (FORMATS).
        subtitles: Video-MME: put the subtitles of the sampled frames before the question.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise EvaluationError(f"{path}: no such data file or folder. Check the --data path.")
    if format not in FORMATS:
        raise EvaluationError(f"unknown data format {format!r}. Use one of: {', '.join(FORMATS)}.")
    root = Path(data_root).expanduser() if data_root is not None else None
    if format == "auto":
        format = detect_format(path)
    benchmark_formats = {f.name: f for _, f in data_formats()}
    if path.is_dir() and not (format in benchmark_formats and benchmark_formats[format].folders):
        raise EvaluationError(f"{path}: a folder; --format {format} reads a file. {_ask()}")
    if format == "records":
        data = load_annotations(path, root)
    elif format == "choice":
        data = load_choices(path, root)
    else:
        data = benchmark_formats[format].read(path, root, subtitles)
    return drop_duplicate_ids(data)
