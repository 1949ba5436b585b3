"""An evaluation set from a path: which format a file is in, and the loader that reads it.

Formats: annotation records (`records`), the general multiple-choice form (`choice`), Video-MME
(`videomme`), MVBench (`mvbench`) and MLVU (`mlvu`); `auto` tells them apart from the path and the
first record, and asks for --format when it cannot. Whole benchmark folders are read with
`vidlab.evaluation.benchmarks.load_benchmark` (`--benchmark NAME --root DIR`).
"""

from __future__ import annotations

from pathlib import Path

from vidlab.errors import DataFileError, EvaluationError
from vidlab.evaluation.benchmarks import MLVU_TASKS, MVBENCH_TASKS, load_choices, load_mlvu, load_mvbench, load_videomme
from vidlab.evaluation.benchmarks.common import parquet_columns, read_json_lenient
from vidlab.evaluation.records import EvalSet, Skipped, load_annotations
from vidlab.files import iter_json_items

FORMATS = ("auto", "records", "choice", "videomme", "mvbench", "mlvu")
_ASK = "Pass --format records, choice, videomme, mvbench or mlvu, or read a whole benchmark folder with " \
       "--benchmark NAME --root DIR (`vidlab eval benchmarks` lists them)."
VIDEOMME_COLUMNS = {"videoID", "question_id", "options", "answer"}


def _parquet_format(path: Path) -> str:
    columns = set(parquet_columns(path))
    if VIDEOMME_COLUMNS <= columns:
        return "videomme"
    raise EvaluationError(
        f"{path}: a parquet file whose columns ({', '.join(sorted(columns))}) are not Video-MME's "
        f"({', '.join(sorted(VIDEOMME_COLUMNS))}). {_ASK}"
    )


def _folder_format(path: Path) -> str:
    names = {p.name for p in path.glob("*.json")}
    kinds = [name for name, tasks in (("mvbench", MVBENCH_TASKS), ("mlvu", MLVU_TASKS)) if names & set(tasks)]
    if len(kinds) == 1:
        return kinds[0]
    what = "task files of both MVBench and MLVU" if kinds else "no MVBench or MLVU task files"
    raise EvaluationError(f"{path}: a folder with {what}. {_ASK}")


def _first_items(path: Path):
    try:
        yield from iter_json_items(path)
    except DataFileError:
        # Hand-edited files (Video-MME's own result template) can carry trailing commas.
        whole = read_json_lenient(path)
        yield from enumerate(whole if isinstance(whole, list) else [whole], start=1)


def detect_format(path: Path) -> str:
    """records, choice, videomme, mvbench or mlvu, from the path and the file's first record.

    Raises:
        EvaluationError: the file or folder fits none of them, or more than one; the message asks for --format.
    """
    if path.suffix.lower() == ".parquet":
        return _parquet_format(path)
    if path.is_dir():
        return _folder_format(path)
    if path.name in MVBENCH_TASKS:
        return "mvbench"
    if path.name in MLVU_TASKS:
        return "mlvu"
    try:
        first = list(_first_items(path))
    except DataFileError as err:
        raise EvaluationError(f"{err} {_ASK}") from err
    for line, item in first:
        if not isinstance(item, dict):
            continue
        if "conversations" in item:
            return "records"
        if "questions" in item or ("question_id" in item and ("videoID" in item or "duration" in item)):
            return "videomme"
        if "candidates" in item:
            return "mlvu" if "question_type" in item else "mvbench"  # question_type: a field only MLVU has
        if "options" in item and "question" in item:
            return "choice"
        raise EvaluationError(
            f"{path}:{line}: cannot tell the data format from this record (keys: {', '.join(sorted(item))}). {_ASK}"
        )
    raise EvaluationError(f"{path}: no readable record to tell the format from. {_ASK}")


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
            or the released parquet), MVBench or MLVU (their `json/` folder or one task's JSON).
        data_root: folder that media paths are relative to (default: per format, see docs/evaluate.md).
        format: auto, records, choice, videomme, mvbench or mlvu.
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
    if path.is_dir() and format not in ("mvbench", "mlvu"):
        raise EvaluationError(f"{path}: a folder; --format {format} reads a file. {_ASK}")
    if format == "records":
        data = load_annotations(path, root)
    elif format == "choice":
        data = load_choices(path, root)
    elif format == "videomme":
        data = load_videomme(path, root, subtitles=subtitles)
    elif format == "mlvu":
        data = load_mlvu(path, root)
    else:
        data = load_mvbench(path, root)
    return drop_duplicate_ids(data)
