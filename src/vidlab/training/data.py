"""Training data: annotation records -> labelled samples within the token budget -> padded batches.

The steps, each usable on its own:
    load_records   annotation files -> TrainRecords (the usable records, each parsed when used: a
                   million-record file is held as its index, not as a million dicts) + SkipNote list
                   (bad records, with their position)
    encode_record  one record -> its media decoded and `vidlab.inputs.encode`d with labels, within
                   model_max_length (the same encoding chat and evaluation use)
    TrainDataset   records -> samples; a record that fails is replaced by the next one, so every
                   batch is full and the order is the same on every run
    Collator       samples -> one right-padded batch for `model(**batch["inputs"])`
"""

from __future__ import annotations

import array
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidlab.annotations import Position, reason_of
from vidlab.conversation import Conversation, parse_record
from vidlab.errors import ConversationError, DataFileError, MediaError, MediaNotFoundError, SampleError, VidlabError
from vidlab.files import read_jsonl
from vidlab.inputs import IGNORE_INDEX, Sample, collate, encode, load_media
from vidlab.record_index import RecordIndex, RecordReader
from vidlab.record_kinds import kind_of
from vidlab.settings import MediaSettings


@dataclass(frozen=True)
class SkipNote:
    """A record that was not trained on, and why: one line of skipped.jsonl.

    `index` is the record's place among its file's records (several records of a JSON list written
    on one line share a line); `kind` is one of `vidlab.record_kinds.KINDS`.
    """

    file: str
    line: int
    id: str | None
    reason: str
    index: int = -1
    kind: str = "invalid record"

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def of(position: Position, record_id: str | None, err: BaseException) -> SkipNote:
        return SkipNote(str(position.file), position.line, record_id, reason_of(err, position), position.index,
                        kind_of(err))


@dataclass
class TrainRecord:
    """One usable annotation record.

    Attributes:
        position: where the record is (file as given, index in the file, line its JSON starts on).
        id: the record's "id", or its position's default id (ids need not be unique).
        index: position in the list `load_records` returned.
        conversation: the turns, with at least one assistant reply.
        data_root: the folder relative media paths are resolved against.
    """

    position: Position
    id: str
    index: int
    conversation: Conversation
    data_root: Path

    @property
    def file(self) -> Path:
        return self.position.file

    @property
    def line(self) -> int:
        return self.position.line

    @property
    def source(self) -> str:
        return str(self.position)


# ---------------------------------------------------------------------------------------------------------------------
# Reading records


def _resolve(path: str, root: Path) -> Path:
    resolved = Path(path).expanduser()
    return resolved if resolved.is_absolute() else root / resolved


def _usable_conversation(item: Any, where: str, root: Path, found: dict[Path, bool] | None = None) -> Conversation:
    """The record as a Conversation training can learn from, or the VidlabError that says why not.

    `found` remembers which media paths exist (a million records often share a few thousand videos).
    """
    if isinstance(item, Exception):
        raise item
    conversation = parse_record(item, where=where)
    if not any(turn.role == "assistant" for turn in conversation.turns):
        raise ConversationError(
            f'{where}: no assistant ("gpt") turn, so nothing to learn. Add the expected answer as a gpt turn.',
            "no answer",
        )
    for part in conversation.media:
        path = _resolve(part.path, root)
        exists = found.get(path) if found is not None else None
        if exists is None:
            exists = path.exists()
            if found is not None:
                found[path] = exists
        if not exists:
            raise MediaNotFoundError(
                f"{where}: {part.type} not found: {path}. Relative paths are resolved against the data root "
                f"({root}); fix the path or the data root."
            )
    return conversation


class TrainRecords(Sequence[TrainRecord]):
    """The usable records of some annotation files, each read and parsed from its file when asked for.

    Holds each file's `RecordIndex` and, per usable record, its file and its index in the file
    (16 bytes a record): a data-loader worker gets this, not a parsed copy of the records.
    """

    def __init__(self, indexes: list[RecordIndex], roots: list[Path], picks: np.ndarray):
        self.indexes, self.roots = indexes, roots
        self.picks = picks  # (n, 2) int64: file number, index of the record in its file

    def __len__(self) -> int:
        return len(self.picks)

    def __getitem__(self, i: int) -> TrainRecord:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(f"record {i} of {len(self)}")
        i = i % len(self)
        file_number, record_number = (int(v) for v in self.picks[i])
        raw = self.indexes[file_number][record_number]
        where = str(raw.position)
        # Checked when the records were loaded; a media file deleted since fails as a sample and is skipped.
        conversation = parse_record(raw.item, where=where)
        return TrainRecord(raw.position, raw.id, i, conversation, self.roots[file_number])

    def __iter__(self) -> Iterator[TrainRecord]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, TrainRecords)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def places(self) -> Iterator[tuple[Path, int]]:
        """(file, index in the file) of each record, in order, without reading any."""
        for file_number, record_number in self.picks.tolist():
            yield self.indexes[file_number].path, record_number

    def subset(self, keep: np.ndarray) -> TrainRecords:
        """The records where `keep` (one bool per record) is set, renumbered from 0."""
        return TrainRecords(self.indexes, self.roots, self.picks[np.asarray(keep, dtype=bool)])


def load_records(
    files: list[Path], data_root: Path | None = None, strict: bool = False
) -> tuple[TrainRecords, list[SkipNote]]:
    """Read annotation files (JSON list or JSONL) into training records.

    One streaming pass per file checks every record and leaves the file's index; the records come
    back as `TrainRecords`, each read again from its file when used (so memory does not grow with
    the records' text, in this process or in data-loader workers).

    A record is skipped (a SkipNote with its position, id, reason and kind) when its line is not
    valid JSON, it is not an object, its conversation does not validate, it has no assistant turn,
    or one of its media paths does not exist.

    Args:
        files: annotation files, read in order.
        data_root: folder that relative media paths are relative to (default: each annotation
            file's own folder).
        strict: raise on the first bad record instead of skipping it.

    Raises:
        DataFileError: an annotation file or the data root is missing, or a file cannot be read at
            all (empty, not UTF-8, a JSON list broken part way).
        SampleError: strict=True and a record is bad; names its place, the id and the fix.
    """
    files = [Path(f) for f in files]
    problems = [f"{f}: no such annotation file" for f in files if not f.is_file()]
    if data_root is not None and not Path(data_root).is_dir():
        problems.append(f"{data_root}: the data root is not a folder")
    if problems:
        raise DataFileError(
            "; ".join(problems) + ". Check the paths: annotation files are JSON lists or JSONL of records, "
            "and media paths in them are relative to the data root (default: the annotation file's folder)."
        )
    picks: list[np.ndarray] = [np.zeros((0, 2), dtype=np.int64)]
    indexes: list[RecordIndex] = []
    roots: list[Path] = []
    skipped: list[SkipNote] = []
    for number, file in enumerate(files):
        root = Path(data_root) if data_root is not None else file.parent
        checked = _checked_before(file, root)
        if checked is not None and not (strict and checked[1]):  # (strict: the full pass words the error)
            usable, notes = checked
            index = RecordIndex.of(file)
        else:
            usable, notes, index = _check_file(file, root, strict)
        skipped += notes
        picks.append(np.stack([np.full(len(usable), number, dtype=np.int64), usable], axis=1))
        indexes.append(index)
        roots.append(root)
    return TrainRecords(indexes, roots, np.concatenate(picks)), skipped


def _check_file(file: Path, root: Path, strict: bool) -> tuple[np.ndarray, list[SkipNote], RecordIndex]:
    """One pass over the file: the index of each usable record, a SkipNote per other one, the file's index."""
    usable = array.array("q")
    notes: list[SkipNote] = []
    found: dict[Path, bool] = {}
    reader = RecordReader(file)
    for raw in reader:
        where = str(raw.position)
        try:
            _usable_conversation(raw.item, where, root, found)
        except VidlabError as err:
            note = SkipNote.of(raw.position, raw.given_id, err)
            if strict:
                place = where + (f" (id {raw.given_id})" if raw.given_id is not None else "")
                raise SampleError(
                    f"{place}: {note.reason} (strict mode stops at the first bad record: "
                    "fix or remove it, or turn strict off to skip bad records and list them in skipped.jsonl)"
                ) from err
            notes.append(note)
            continue
        usable.append(raw.position.index)
    numbers = np.frombuffer(usable, dtype=np.int64).copy()
    if reader.index.saved is not None:  # a large file: keep the result for the next run on it
        _remember_check(reader.index, root, numbers, notes, found)
    return numbers, notes, reader.index


# What the check of a large file found, saved beside its index: which records are usable, the notes of the
# others, and which media paths existed. Reused while the file and every one of those media paths are as they
# were (a video added or deleted since changes the answer); a million records are then not parsed at start-up.
_CHECK_VERSION = 1


def _check_file_of(index_file: Path, root: Path) -> Path:
    import hashlib

    key = hashlib.sha256(f"{_CHECK_VERSION}\0{root.resolve()}".encode()).hexdigest()[:16]
    return index_file.with_name(f"{index_file.stem}.train-{key}.json")


def _remember_check(index: RecordIndex, root: Path, usable: np.ndarray, notes: list[SkipNote],
                    found: dict[Path, bool]) -> None:
    from vidlab.files import write_atomic

    target = _check_file_of(index.saved, root)
    try:
        np.save(target.with_suffix(".npy"), usable)
        write_atomic(target, json.dumps({"notes": [note.to_dict() for note in notes],
                                         "media": [[str(path), exists] for path, exists in found.items()]}))
    except OSError:  # a cache that cannot be written only costs the next run this pass again
        pass


def _checked_before(file: Path, root: Path) -> tuple[np.ndarray, list[SkipNote]] | None:
    index = RecordIndex.cached(file)
    if index is None:
        return None
    target = _check_file_of(index.saved, root)
    try:
        saved = json.loads(target.read_text(encoding="utf-8"))
        usable = np.load(target.with_suffix(".npy"))
    except (OSError, ValueError):
        return None
    if any(Path(path).exists() != exists for path, exists in saved["media"]):
        return None
    return usable, [SkipNote(**note) for note in saved["notes"]]


def leave_out_checked(records: TrainRecords, check: Path, settings: MediaSettings,
                      max_length: int) -> tuple[TrainRecords, list[SkipNote]]:
    """The records `vidlab data check` found usable (its check.json and the bad.jsonl beside it), and a
    SkipNote for each one left out, so that steps per epoch count usable records.

    Raises:
        DataFileError: the check was made on other files or settings, or before a file last changed.
    """
    check = Path(check).expanduser()
    try:
        report = json.loads(check.read_text(encoding="utf-8"))
        bad = read_jsonl(check.parent / "bad.jsonl")
    except (OSError, ValueError) as err:
        raise DataFileError(f"{check}: not a readable check.json with bad.jsonl beside it ({err}). Run "
                            "`vidlab data check` again.") from err
    def same(file) -> str:
        return str(Path(file).expanduser().resolve())

    files = sorted({str(index.path) for index in records.indexes})
    stale = [f for f in files if Path(f).stat().st_mtime > check.stat().st_mtime]
    problems = []
    if not {same(f) for f in files} <= {same(f) for f in report.get("files", [])}:
        problems.append(f"it checked {', '.join(report.get('files', []))}, not {', '.join(files)}")
    if stale:
        problems.append(f"{', '.join(stale)} changed after it")
    if report.get("settings") != settings.model_dump(mode="json") or report.get("model_max_length") != max_length:
        problems.append("it used other media settings or model_max_length than this config")
    if problems:
        raise DataFileError(f"data.check: {check}: {'; '.join(problems)}. Run `vidlab data check --config CONFIG` "
                            "again, or leave data.check out.")
    left_out = {(same(row["file"]), row["index"]): row for row in bad}
    resolved = {index.path: same(index.path) for index in records.indexes}
    keep = np.ones(len(records), dtype=bool)
    notes = []
    for i, (file, index) in enumerate(records.places()):
        row = left_out.get((resolved[file], index))
        if row is not None:
            keep[i] = False
            record = records[i]
            notes.append(SkipNote(str(record.file), record.line, record.id, f"data check: {row['reason']}",
                                  record.position.index, row["kind"]))
    return records.subset(keep), notes


# ---------------------------------------------------------------------------------------------------------------------
# One sample


def _decoder_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (MediaError, ValueError, RuntimeError, OSError, EOFError)
    try:
        import av

        errors += (av.error.FFmpegError,)
    except ImportError:  # pragma: no cover - av is a dependency, but decoding errors must not need it
        pass
    return errors


def encode_record(record: TrainRecord, processor, settings: MediaSettings, max_length: int) -> Sample:
    """One record -> model inputs with labels (`vidlab.inputs.encode`), within `max_length` tokens.

    Raises:
        SampleError: the media cannot be read or used, or the sample does not fit even with one
            frame per video at the smallest size. The message starts with the record's file:line.
    """
    try:
        media = load_media(record.conversation, processor, settings, data_root=record.data_root)
    except _decoder_errors() as err:
        reason = str(err) if isinstance(err, MediaError) else (
            f"the media could not be decoded ({type(err).__name__}: {err}). Check the file or re-encode it"
        )
        raise SampleError(f"{record.source}: {reason}") from err
    return encode(record.conversation, media, processor, settings, labels=True, max_length=max_length)


# ---------------------------------------------------------------------------------------------------------------------
# Data set and batches


class TrainDataset(torch.utils.data.Dataset):
    """Records -> encoded samples, replacing a sample that fails by the next records in order.

    Item `i` is {"sample", "record", "skipped"}: record i if it encodes, else record i+1, i+2, ...
    (wrapping around) up to `max_retries` more; the failures come back in the item's "skipped".
    Every item is therefore a real sample, so all processes of a distributed run step together, and
    the same data gives the same items on every run. A record seen to fail once is not retried or
    reported again by the same process (each DataLoader worker may report it once: deduplicate
    skipped.jsonl on file and index). With `strict`, the first failure comes back as the item's
    "fatal" message instead, for the main process to raise (an exception raised in a DataLoader
    worker would reach the user wrapped in the worker's traceback).

    Works in DataLoader worker processes: all state is plain data and the processor.
    """

    def __init__(
        self,
        records: Sequence[TrainRecord],
        processor,
        settings: MediaSettings = MediaSettings(),
        max_length: int = 16384,
        strict: bool = False,
        max_retries: int = 8,
    ):
        if not records:
            raise VidlabError(
                "no training records to use: the annotation files hold none, or every record was skipped "
                "(see skipped.jsonl for why)."
            )
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more (got {max_retries})")
        self.records = records
        self.processor = processor
        self.settings = settings
        self.max_length = max_length
        self.strict = strict
        self.max_retries = max_retries
        self._failed: set[int] = set()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        skipped: list[SkipNote] = []
        reasons: list[str] = []
        attempts = min(self.max_retries + 1, len(self.records))
        for step in range(attempts):
            position = (index + step) % len(self.records)
            record = self.records[position]
            if position in self._failed:
                continue
            try:
                sample = encode_record(record, self.processor, self.settings, self.max_length)
            except SampleError as err:
                if self.strict:
                    return {"sample": None, "skipped": [], "fatal": (
                        f"{err} (strict mode stops at the first bad sample: fix or remove the record, or turn "
                        "data.strict off to skip bad samples and list them in skipped.jsonl)"
                    )}
                self._failed.add(position)
                note = SkipNote.of(record.position, record.id, err)
                skipped.append(note)
                reasons.append(f"{record.source}: {note.reason}")
                continue
            return {"sample": sample, "record": record, "skipped": skipped}
        raise VidlabError(
            f"records {index} to {index + attempts - 1} (of {len(self.records)}) all failed; the data seems broken. "
            f"Last reasons: {'; '.join(reasons[-3:]) or 'failed before in this process'}. Check the media files "
            "and the data root, or run with strict on to stop at the first bad record."
        )


class Collator:
    """Items of TrainDataset -> one batch, padded on the right (`vidlab.inputs.collate`)."""

    def __init__(self, pad_token_id: int):
        if pad_token_id is None:
            raise VidlabError("the tokenizer has no pad token; set tokenizer.pad_token (Qwen: <|endoftext|>).")
        self.pad_token_id = int(pad_token_id)

    def __call__(self, items: list[dict]) -> dict:
        """Returns:
        inputs: tensors for `model(**inputs)`, labels included.
        skipped: every item's SkipNotes.
        num_samples: samples in the batch.
        num_label_tokens: positions whose label is learned after the model's shift by one
            (labels[:, 1:] != -100): the count the mean loss is taken over, for token-weighted
            gradient accumulation.
        stats: each sample's InputStats.
        fatal: only when a strict dataset met a bad sample: its message (nothing else is set).
        """
        if not items:
            raise ValueError("Collator got an empty list of items")
        fatal = next((item["fatal"] for item in items if item.get("fatal")), None)
        if fatal is not None:
            return {"fatal": fatal}
        batch = collate([item["sample"] for item in items], self.pad_token_id, "right")
        labels = batch.tensors["labels"]
        return {
            "inputs": batch.tensors,
            "skipped": [note for item in items for note in item["skipped"]],
            "num_samples": len(items),
            "num_label_tokens": int((labels[:, 1:] != IGNORE_INDEX).sum()),
            "stats": batch.stats,
        }


def raise_if_fatal(batch: dict) -> dict:
    """A batch from Collator, or the SampleError a strict dataset reported, raised here in the main process."""
    if "fatal" in batch:
        raise SampleError(batch["fatal"])
    return batch


__all__ = [
    "Collator",
    "SkipNote",
    "TrainDataset",
    "TrainRecord",
    "TrainRecords",
    "encode_record",
    "leave_out_checked",
    "load_records",
    "raise_if_fatal",
]
