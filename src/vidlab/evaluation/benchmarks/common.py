"""What the benchmark readers share: options and answer letters, records, video lookup, layout errors,
lenient JSON and parquet rows."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vidlab.conversation import Conversation, MediaPart, TextPart, Turn, seconds_field
from vidlab.errors import DataFileError, EvaluationError, VidlabError
from vidlab.evaluation.answers import LETTERS, normalise
from vidlab.evaluation.records import EvalRecord, EvalRecords, EvalSet, Skipped, duplicate_id
from vidlab.files import TEXT_ENCODING, iter_json_items, reason_of

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".MP4")
MVBENCH_INSTRUCTION = "Answer with the option's letter from the given choices directly and only give the best option."

_LETTER_PREFIX_RE = re.compile(r"^\s*\(?([A-Z])\s*[\.\):]\s*")
# A comma right before "}" or "]", outside strings: the stdlib's parser rejects it, editors and
# hand-made files (Video-MME's own result template) leave it in.
_TRAILING_COMMA_RE = re.compile(r'("(?:\\.|[^"\\])*")|,(\s*[\]}])')


class BenchmarkLayoutError(EvaluationError):
    """A benchmark folder that is not laid out as the benchmark's release lays it out."""


def layout_error(root: Path, title: str, expected: str, fix: str = "") -> BenchmarkLayoutError:
    return BenchmarkLayoutError(
        f"{root}: not a {title} folder as released: expected {expected}. {fix}".rstrip()
        + f" `vidlab eval benchmarks {title}` shows the layout and where to download it."
    )


def first_existing(root: Path, names: Sequence[str]) -> Path | None:
    """The first of root/name that exists."""
    return next((root / name for name in names if (root / name).exists()), None)


def require_file(root: Path, names: Sequence[str], title: str, fix: str = "") -> Path:
    found = first_existing(root, names)
    if found is None or not found.is_file():
        raise layout_error(root, title, " or ".join(f"the file {root / n}" for n in names), fix)
    return found


def require_folder(root: Path, names: Sequence[str], title: str, what: str = "videos") -> str:
    """The first of the folders that exists (relative name); a layout error naming them all if none."""
    for name in names:
        if (root / name).is_dir():
            return name
    raise layout_error(root, title, f"a folder of {what}: " + " or ".join(f"{root / n}/" for n in names))


def find_video(root: Path, folders: str | Sequence[str], stem: str) -> str:
    """`folder/stem.<ext>` for the first folder and container that exist (relative to root); the first
    folder's `.mp4` when none does, so the record is skipped later with "no such file" naming that path."""
    folders = [folders] if isinstance(folders, str) else list(folders)
    for folder in folders:
        prefix = f"{folder}/" if folder else ""
        for suffix in VIDEO_SUFFIXES:
            if (root / f"{prefix}{stem}{suffix}").exists():
                return f"{prefix}{stem}{suffix}"
    return f"{folders[0]}/{stem}.mp4" if folders[0] else f"{stem}.mp4"


# ---- JSON and parquet -------------------------------------------------------------------------------


def read_json_lenient(path: Path) -> Any:
    """A whole JSON file, accepting trailing commas; errors name the file, line and column."""
    try:
        text = path.read_text(encoding=TEXT_ENCODING)
    except (OSError, UnicodeDecodeError) as err:
        raise DataFileError(f"{path}: cannot read the file ({err}). Check the path and that it is UTF-8.") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return json.loads(_TRAILING_COMMA_RE.sub(lambda m: m.group(1) or m.group(2), text))
    except json.JSONDecodeError as err:
        raise DataFileError(
            f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg}). Fix the file (re-download it)."
        ) from err


def json_items(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, item) for each record of a JSON list or JSONL file; a list that the strict reader cannot
    read (trailing commas) is read whole, its items placed by index."""
    try:
        items = list(iter_json_items(path))
    except DataFileError:
        whole = read_json_lenient(path)
        if not isinstance(whole, list):
            raise DataFileError(f"{path}: expected a JSON list of records.") from None
        yield from ((f"{path}#{n}", item) for n, item in enumerate(whole, start=1))
        return
    yield from ((f"{path}:{line}", item) for line, item in items)


def parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except (OSError, ValueError) as err:  # pyarrow.ArrowInvalid is a ValueError
        raise DataFileError(f"{path}: not a readable parquet file ({err}). Download it again.") from err


def parquet_rows(path: Path) -> list[tuple[str, dict]]:
    """(where, row) for each row of a parquet file, where = file#rowN."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:
        raise DataFileError(f"{path}: not a readable parquet file ({err}). Download it again.") from err
    return [(f"{path}#row{n}", row) for n, row in enumerate(table.to_pylist(), start=1)]


# ---- options, answers, records ------------------------------------------------------------------------


def strip_letters(options: Sequence[str]) -> list[str]:
    """["A. dog", "B. cat"] -> ["dog", "cat"] when every option carries its own letter in order."""
    matches = [_LETTER_PREFIX_RE.match(o) for o in options]
    if all(m and m.group(1) == LETTERS[i] for i, m in enumerate(matches)):
        return [o[m.end() :].strip() for o, m in zip(options, matches)]
    return [o.strip() for o in options]


def options_list(value: Any, where: str, name: str = "options", as_given: bool = False) -> list[str]:
    """The option texts of a record; `as_given` keeps them exactly as the file has them (the benchmarks
    whose original prompt sends them so), otherwise letters like "A. " and surrounding spaces go."""
    if isinstance(value, dict):
        keys = sorted(value)
        if keys != list(LETTERS[: len(keys)]):
            raise EvaluationError(f'{where}: "{name}" keys must be the letters A, B, C, ... in order (got {keys}).')
        value = [value[k] for k in keys]
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(o, (str, int, float)) for o in value):
        raise EvaluationError(f'{where}: "{name}" must be a list (or A/B/... object) of at least two answers.')
    if len(value) > len(LETTERS):
        raise EvaluationError(f"{where}: more than {len(LETTERS)} options; split the question.")
    return [str(o) for o in value] if as_given else strip_letters([str(o) for o in value])


def answer_letter(answer: Any, options: Sequence[str], where: str) -> str:
    """A letter ("B", "(B)", "b."), a 0-based index, or the text of one option -> the letter."""
    valid = LETTERS[: len(options)]
    if isinstance(answer, bool):
        answer = None
    if isinstance(answer, int) and 0 <= answer < len(options):
        return valid[answer]
    if isinstance(answer, str):
        bare = answer.strip().strip("().: ").upper()
        if len(bare) == 1 and bare in valid:
            return bare
        texts = [normalise(o) for o in options]
        if normalise(answer) in texts and texts.count(normalise(answer)) == 1:
            return valid[texts.index(normalise(answer))]
    raise EvaluationError(
        f'{where}: "answer" {answer!r} is not one of the letters {", ".join(valid)}, an option index or the text '
        "of one option. Fix the answer."
    )


def candidate_letter(answer: Any, candidates: Sequence[str], where: str) -> str:
    """MVBench / MLVU: the answer is the text of one candidate, compared as is (as VideoLLaMA3 does, which
    takes the last candidate equal to it when one is listed twice); other forms (a letter, a text differing
    in case or punctuation) as `answer_letter` reads them."""
    if isinstance(answer, str) and answer in candidates:
        return LETTERS[max(i for i, candidate in enumerate(candidates) if candidate == answer)]
    return answer_letter(answer, candidates, where)


def clip_window(item: dict, where: str) -> tuple[float | None, float | None]:
    return seconds_field(item.get("start"), "start", where), seconds_field(item.get("end"), "end", where)


def question_text(item: dict, where: str, name: str = "question") -> str:
    """The question exactly as the file has it: VideoLLaMA3 sends it unstripped (trailing spaces and all)."""
    question = item.get(name)
    if not isinstance(question, str) or not question.strip():
        raise EvaluationError(f'{where}: the record has no "{name}" text. Add one.')
    return question


def labels(item: dict, names: dict[str, str]) -> dict[str, Any]:
    """{label: item[field]} for the fields present (lists kept as lists, other values as strings)."""
    found = {}
    for key, name in names.items():
        value = item.get(name)
        if value in (None, "") or (isinstance(value, list) and not value):
            continue
        found[key] = [str(v) for v in value] if isinstance(value, list) else str(value)
    return found


def prompt_record(
    *,
    record_id: str,
    where: str,
    index: int,
    media: list[MediaPart],
    prompt: str,
    references: list[str],
    options: list[str] | None = None,
    answer: str | None = None,
    meta: dict[str, Any] | None = None,
    subtitles=None,
    scoring: dict[str, Any] | None = None,
) -> EvalRecord:
    """A one-turn record: the media, then the prompt text."""
    conversation = Conversation(
        turns=[Turn(role="user", parts=[*media, TextPart(text=prompt)])], id=record_id, source=where
    )
    return EvalRecord(record_id, where, index, conversation, references, options, answer, meta or {}, subtitles,
                      scoring or {})


def choice_record(
    *,
    record_id: str,
    where: str,
    index: int,
    media: list[MediaPart],
    prompt: str,
    options: list[str],
    answer: str | None,
    meta: dict[str, Any],
    subtitles=None,
    scoring: dict[str, Any] | None = None,
) -> EvalRecord:
    return prompt_record(record_id=record_id, where=where, index=index, media=media, prompt=prompt,
                         references=[answer] if answer else [], options=options, answer=answer, meta=meta,
                         subtitles=subtitles, scoring=scoring)


def lettered(options: Sequence[str], style: str = "({letter}) {option}\n") -> str:
    return "".join(style.format(letter=LETTERS[i], option=option) for i, option in enumerate(options))


class Collector:
    """Gathers records and skipped entries while a reader walks a benchmark's files."""

    def __init__(self) -> None:
        self.records, self.skipped = [], []

    @property
    def index(self) -> int:
        return len(self.records) + len(self.skipped)

    def add(self, where: str, record_id: str | None, build: Callable[[int], EvalRecord]) -> None:
        """Add the record `build(index)` makes; a VidlabError it raises becomes a Skipped entry."""
        index = self.index
        try:
            record = build(index)
        except VidlabError as err:
            self.skipped.append(Skipped(where, record_id, reason_of(err, where), index))
            return
        self.records.append(record)

    def result(self, path: Path, name: str, root: Path, split: str | None = None) -> EvalSet:
        return EvalSet(path, name, root, self.records, self.skipped, split)


def drop_duplicate_ids(data: EvalSet) -> EvalSet:
    """Predictions are keyed on the id: a second record with the same id is skipped, not merged."""
    if isinstance(data.records, EvalRecords):
        data.records, repeats = data.records.duplicates()
        data.skipped.extend(repeats)
        data.skipped.sort(key=lambda s: s.index)
        return data
    first: dict[str, str] = {}
    records = []
    for record in data.records:
        if record.id in first:
            data.skipped.append(duplicate_id(record, first[record.id]))
            continue
        first[record.id] = record.source
        records.append(record)
    data.records = records
    data.skipped.sort(key=lambda s: s.index)
    return data
