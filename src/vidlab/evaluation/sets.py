"""An evaluation set from a path: which format a file is in, and the loader that reads it.

Formats: annotation records (`records`), the general multiple-choice form (`choice`), Video-MME
(`videomme`) and MVBench (`mvbench`); `auto` tells them apart from the path and the first record.
"""

from __future__ import annotations

from pathlib import Path

from vidlab.errors import EvaluationError
from vidlab.evaluation import benchmarks
from vidlab.evaluation.benchmarks import MVBENCH_TASKS
from vidlab.evaluation.records import EvalSet, Skipped, load_annotations
from vidlab.files import iter_json_items

FORMATS = ("auto", "records", "choice", "videomme", "mvbench")


def detect_format(path: Path) -> str:
    """records, choice, videomme or mvbench, from the file's first record."""
    if path.suffix.lower() == ".parquet":
        return "videomme"
    if path.is_dir():
        return "mvbench"
    if path.name in MVBENCH_TASKS:
        return "mvbench"
    for line, item in iter_json_items(path):
        if not isinstance(item, dict):
            continue
        if "conversations" in item:
            return "records"
        if "questions" in item or ("question_id" in item and ("videoID" in item or "duration" in item)):
            return "videomme"
        if "candidates" in item:
            return "mvbench"
        if "options" in item and "question" in item:
            return "choice"
        raise EvaluationError(
            f"{path}:{line}: cannot tell the data format from this record (keys: {', '.join(sorted(item))}). "
            "Pass --format records, choice, videomme or mvbench."
        )
    raise EvaluationError(f"{path}: no readable record to tell the format from. Pass --format.")


def drop_duplicate_ids(data: EvalSet) -> EvalSet:
    """Predictions are keyed on the id: a second record with the same id is skipped, not merged."""
    first: dict[str, str] = {}
    records = []
    for record in data.records:
        if record.id in first:
            data.skipped.append(
                Skipped(record.source, record.id, f"duplicate id {record.id!r} (first at {first[record.id]}). "
                        "Give each record a unique id.", record.index)
            )
            continue
        first[record.id] = record.source
        records.append(record)
    data.records = records
    data.skipped.sort(key=lambda s: s.index)
    return data


def load_eval_set(
    path: str | Path, data_root: str | Path | None = None, format: str = "auto", subtitles: bool = False
) -> EvalSet:
    """Read an evaluation data set in any supported format.

    Args:
        path: annotation records (JSON/JSONL), a multiple-choice file, a Video-MME file (JSON, JSONL
            or the released parquet) or MVBench (its `json/` folder or one task's JSON).
        data_root: folder that media paths are relative to (default: per format, see docs/evaluate.md).
        format: auto, records, choice, videomme or mvbench.
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
    if format == "records":
        data = load_annotations(path, root)
    elif format == "choice":
        data = benchmarks.load_choices(path, root)
    elif format == "videomme":
        data = benchmarks.load_videomme(path, root, subtitles=subtitles)
    else:
        data = benchmarks.load_mvbench(path, root)
    return drop_duplicate_ids(data)
