"""What an evaluation reads: records with a prompt and reference answers, and the records it skips.

Annotation records (JSON list or JSONL) in the training format: the last assistant turn is the
reference, the turns before it are the prompt. A reference may be a list of strings (several
references), or a record may end with the question and give `"references": [...]`.

An annotation file is read through its record index (`vidlab.record_index`), as training reads it:
one pass checks every record, and the set keeps `EvalRecords` (the index plus 24 bytes a usable
record), each record parsed again when it is answered.
"""

from __future__ import annotations

import array
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidlab.annotations import given_id, reason_of
from vidlab.conversation import ROLE_NAMES, Conversation, TextPart, Turn, parse_record
from vidlab.errors import EvaluationError, VidlabError
from vidlab.evaluation.subtitles import Cue, TimedSubtitles, subtitle_block
from vidlab.media import VideoClip
from vidlab.record_index import RecordIndex, RecordReader

BREAKDOWN_KEYS = ("task", "category", "duration")


@dataclass
class EvalRecord:
    """One question to answer, with what a right answer looks like.

    Attributes:
        id: unique within the data set; predictions and resuming are keyed on it.
        source: where the record is (`vidlab.annotations.Position`: file:line, and the record's number
            in a JSON list), for messages.
        index: position in the data set (the order predictions are written in).
        conversation: the prompt turns, ending with a user turn.
        references: one or more reference answers (for multiple choice: the answer letter).
        options: multiple choice only: the option texts, in letter order (A, B, ...).
        answer: multiple choice only: the correct letter (None where the benchmark keeps it private).
        meta: labels for per-group accuracy (task, category, duration, or a benchmark's own); a list
            value puts the record in several groups.
        subtitles: timed cues (shown at the sampled frames) or plain text, put before the question.
        scoring: how a benchmark scores the answer (written into predictions.jsonl as "scoring"): e.g.
            {"benchmark": "mvbench", "reader": "mvbench"}; "kind" in it overrides `kind`.
    """

    id: str
    source: str
    index: int
    conversation: Conversation
    references: list[str]
    options: list[str] | None = None
    answer: str | None = None
    meta: dict[str, str | list[str]] = field(default_factory=dict)
    subtitles: TimedSubtitles | list[Cue] | str | None = None
    scoring: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """open (free answer), choice (lettered options), match (a benchmark's right/wrong rule),
        grounding (start and end seconds) or judged (right/wrong decided by an LLM judge)."""
        return self.scoring.get("kind") or ("choice" if self.options else "open")

    @property
    def question(self) -> str:
        """The last user turn as text, media shown as <video> / <image>."""
        turn = self.conversation.turns[-1]
        return "".join(p.text if isinstance(p, TextPart) else f"<{p.type}>\n" for p in turn.parts)

    def conversation_for(self, media: list) -> Conversation:
        """The prompt to send once the media are loaded: subtitles need the sampled frame times."""
        if self.subtitles is None:
            return self.conversation
        if isinstance(self.subtitles, str):
            block = subtitle_block(self.subtitles)
        else:
            timed = self.subtitles if isinstance(self.subtitles, TimedSubtitles) else TimedSubtitles(self.subtitles)
            clips = [m for m in media if isinstance(m, VideoClip)]
            # The times the prompt announces for the frames, as VideoLLaMA3 matches subtitles to frames.
            block = timed.block(clips[0].stamps if clips else [])
        turns = list(self.conversation.turns)
        last = turns[-1]
        parts = list(last.parts)
        at = next((i for i, p in enumerate(parts) if isinstance(p, TextPart)), len(parts))
        if at < len(parts):
            parts[at] = TextPart(text=block + parts[at].text)
        else:
            parts.append(TextPart(text=block))
        turns[-1] = Turn(role=last.role, parts=parts)
        return self.conversation.model_copy(update={"turns": turns})


@dataclass
class Skipped:
    """A record that was not evaluated, and why."""

    source: str  # the record's position (file:line, and its number in a JSON list)
    id: str | None
    reason: str
    index: int = -1

    def to_dict(self) -> dict:
        return {"source": self.source, "id": self.id, "reason": self.reason}


@dataclass
class EvalSet:
    """Records to answer and those skipped.

    Attributes:
        path: the data file (for a benchmark: its main annotation file).
        format: records, choice, or the benchmark's name.
        data_root: the folder media paths are relative to.
        split: the benchmark split read (None for a plain data file).
    """

    path: Path
    format: str
    data_root: Path
    records: Sequence[EvalRecord]  # a list, or EvalRecords (an annotation file's, parsed when used)
    skipped: list[Skipped]
    split: str | None = None

    def limited(self, limit: int | None) -> EvalSet:
        """Only the first `limit` records of the file (good and bad alike)."""
        if limit is None:
            return self
        if isinstance(self.records, EvalRecords):
            records = self.records.subset(self.records.picks < limit)
        else:
            records = [r for r in self.records if r.index < limit]
        return EvalSet(self.path, self.format, self.data_root, records,
                       [s for s in self.skipped if s.index < limit], self.split)

    def order(self) -> Mapping[str, int]:
        """Record id -> its index in the data set (predictions are written in this order)."""
        if isinstance(self.records, EvalRecords):
            return self.records.order()
        return {record.id: record.index for record in self.records}


def id_digest(record_id: str) -> bytes:
    """16 bytes standing for the id (see `id_digests`)."""
    return hashlib.blake2b(record_id.encode(), digest_size=16).digest()


def id_digests(ids: Iterable[str]) -> np.ndarray:
    """16 bytes standing for each id (blake2b: two different ids never meet in practice), so a million ids
    are compared, sorted and looked up as one array instead of a million strings."""
    digests = bytearray()
    for record_id in ids:
        digests += id_digest(record_id)
    return np.frombuffer(digests, dtype="S16").copy()


class EvalRecords(Sequence[EvalRecord]):
    """The usable records of one annotation file, each read from the file and parsed when asked for.

    Holds the file's `RecordIndex` and, per record, its index in the file and its id's digest
    (24 bytes a record): a million-record file is never held parsed, and resuming, ordering and
    duplicate ids work on the digests.
    """

    def __init__(self, index: RecordIndex, picks: np.ndarray, digests: np.ndarray):
        self.index = index
        self.picks = picks  # int64: each record's index in the file
        self.digests = digests  # S16: each record's id_digests

    def __len__(self) -> int:
        return len(self.picks)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return EvalRecords(self.index, self.picks[i], self.digests[i])
        if not -len(self) <= i < len(self):
            raise IndexError(f"record {i} of {len(self)}")
        raw = self.index[int(self.picks[i])]
        # Checked when the set was read; parsed again the same way.
        return annotation_record(raw.item, str(raw.position), raw.position.index, default_id=raw.id)

    def __iter__(self) -> Iterator[EvalRecord]:
        for i in range(len(self)):
            yield self[i]

    def subset(self, keep: np.ndarray) -> EvalRecords:
        """The records where `keep` (one bool per record) is set."""
        keep = np.asarray(keep, dtype=bool)
        return EvalRecords(self.index, self.picks[keep], self.digests[keep])

    def not_in(self, done: np.ndarray) -> EvalRecords:
        """The records whose id digest is not among `done` (digests of answered ids)."""
        return self.subset(~np.isin(self.digests, done))

    def order(self) -> Mapping[str, int]:
        return _DigestOrder(self)

    def duplicates(self) -> tuple[EvalRecords, list[Skipped]]:
        """The records without a repeated id (the first in the file keeps it), and a Skipped entry for each repeat."""
        by_digest = np.argsort(self.digests, kind="stable")  # stable: within one id, file order
        ordered = self.digests[by_digest]
        starts = np.ones(len(self), dtype=bool)  # where a run of one id begins in digest order
        starts[1:] = ordered[1:] != ordered[:-1]
        firsts = by_digest[np.maximum.accumulate(np.where(starts, np.arange(len(self)), 0))]
        repeats, their_firsts = by_digest[~starts], firsts[~starts]
        skipped = [duplicate_id(self[int(at)], self[int(first)].source) for at, first in zip(repeats, their_firsts)]
        keep = np.ones(len(self), dtype=bool)
        keep[repeats] = False
        return self.subset(keep), skipped


class _DigestOrder(Mapping[str, int]):
    """id -> index in the file, looked up by digest in a sorted array (no dict of a million ids)."""

    def __init__(self, records: EvalRecords):
        by_digest = np.argsort(records.digests, kind="stable")
        self.records = records
        self.digests, self.picks = records.digests[by_digest], records.picks[by_digest]

    def __getitem__(self, record_id: str) -> int:
        # As an array item, like those it is compared with (numpy drops an S16 value's trailing zero bytes).
        digest = id_digests([record_id])[0]
        at = int(np.searchsorted(self.digests, digest))
        if at < len(self.digests) and self.digests[at] == digest:
            return int(self.picks[at])
        raise KeyError(record_id)

    def __len__(self) -> int:
        return len(self.digests)

    def __iter__(self) -> Iterator[str]:
        return (record.id for record in self.records)  # read back from the file: the ids are not held


def duplicate_id(record: EvalRecord, first_source: str) -> Skipped:
    """The skip entry of a record whose id an earlier record (at first_source) has."""
    return Skipped(record.source, record.id, f"duplicate id {record.id!r} (first at {first_source}). "
                   "Give each record a unique id.", record.index)


def _references(value: Any, where: str, name: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise EvaluationError(f"{where}: {name} must be a non-empty string or a list of non-empty strings.")
    return list(values)


def annotation_record(item: Any, where: str, index: int, default_id: str) -> EvalRecord:
    """An annotation record -> EvalRecord: the last assistant turn is the reference."""
    if not isinstance(item, dict):
        raise EvaluationError(f"{where}: a record must be a JSON object, got {type(item).__name__}.")
    turns = item.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise EvaluationError(f'{where}: the record has no "conversations" list. Add one (see docs/evaluate.md).')
    last = turns[-1]
    extra = item.get("references")
    last_is_answer = isinstance(last, dict) and ROLE_NAMES.get(str(last.get("from", "")).lower()) == "assistant"
    if last_is_answer and extra is not None:
        raise EvaluationError(
            f'{where}: the record has both a final "gpt" turn and "references". Keep one: either the last gpt '
            'turn is the reference, or the record ends with the question and lists the answers in "references".'
        )
    if last_is_answer:
        references = _references(last.get("value"), where, 'the last "gpt" turn\'s "value"')
        prompt_turns = turns[:-1]
    elif extra is not None:
        references = _references(extra, where, '"references"')
        prompt_turns = turns
    else:
        raise EvaluationError(
            f'{where}: no reference answer: the last turn is not from "gpt" and there is no "references". '
            "Add a final gpt turn with the expected answer."
        )
    conversation = parse_record({**item, "conversations": prompt_turns}, where=where)
    if conversation.turns[-1].role != "user":
        raise EvaluationError(f"{where}: the turns before the reference must end with a human turn (the question).")
    record_id = given_id(item) or default_id
    meta = {key: str(item[key]) for key in BREAKDOWN_KEYS if item.get(key) is not None}
    return EvalRecord(record_id, where, index, conversation, references, meta=meta)


def load_annotations(path: Path, data_root: Path | None = None) -> EvalSet:
    """Annotation records; bad ones become `Skipped` entries with their place and the reason.

    One streaming pass checks each record and keeps its place and id digest; the set's records
    (`EvalRecords`) are parsed again from the file when used.
    """
    reader = RecordReader(path)
    picks, ids, skipped = array.array("q"), bytearray(), []
    for raw in reader:
        where, index = str(raw.position), raw.position.index
        if isinstance(raw.item, Exception):
            skipped.append(Skipped(where, None, reason_of(raw.item, where), index))
            continue
        try:
            record = annotation_record(raw.item, where, index, default_id=raw.id)
        except VidlabError as err:
            skipped.append(Skipped(where, raw.given_id, reason_of(err, where), index))
            continue
        picks.append(index)
        ids += id_digest(record.id)
    records = EvalRecords(reader.index, np.array(picks, dtype=np.int64), np.frombuffer(ids, dtype="S16").copy())
    return EvalSet(path, "records", data_root or path.parent, records, skipped)
