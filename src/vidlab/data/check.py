"""`vidlab data check`: every record read, decoded and encoded as training would, before training.

Records are read with `vidlab.training.data.load_records` and encoded as `encode_record` does (the
same calls, the same settings as `vidlab train` with the same config), in worker processes with a
time limit per record. Records that share their media are measured together, the media decoded
once (`check_sample`). The result says which records training would skip and why (with file:line),
how long the samples are (duration, frames, visual, text and total tokens: percentiles and
histograms), how many the token budget would shrink or skip, and which records are duplicates.

Written to the output folder (each file atomically):
    check.json      the summary (what `vidlab data plan` reads)
    bad.jsonl       one line per bad record: file, index, line, id, kind, reason
    samples.jsonl   one line per usable record: file, index, line, id and its sizes
    histograms.png  the distributions
    cache.jsonl     what was measured, so that a rerun decodes only what changed
and, with cleaned=True, beside each annotation file a copy of it without the bad records
(<name>.clean.jsonl).

Memory does not grow with the records' text: the records are the file's index (`TrainRecords`),
each record's keys are 16-byte digests and its result a row of arrays (`check_results`), the cache
is looked up by digest (`check_cache`), and the output files are written as streams.
"""

from __future__ import annotations

import array
import heapq
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidlab.annotations import read_records
from vidlab.data import check_keys, check_sample
from vidlab.data.check_cache import CheckCache, processor_fingerprint
from vidlab.data.check_pool import TaskFailure, TimedPool
from vidlab.data.check_results import BAD, OK, UNSET, JsonlRows, Results
from vidlab.data.check_stats import MEASURES, distributions, save_histograms
from vidlab.errors import VidlabError
from vidlab.files import write_atomic, write_json
from vidlab.settings import MediaSettings
from vidlab.training.data import TrainRecord, TrainRecords, load_records

DEFAULT_MAX_LENGTH = 16384  # the training config's data.model_max_length default
_CHUNK = 4096  # records whose keys one task reads
_GROUP = 1024  # records sharing their media that one task measures
_TOTAL = 5  # the column of total_tokens in Results.sizes
_FAILURE_REASONS = {
    "timeout": "decoding {detail}. The file may be damaged or very long, or its disk stalled: check it, or raise "
               "--timeout",
    "crashed": "the process decoding it died ({detail}); the file likely crashes the decoder: re-encode it or leave "
               "it out",
    "error": "vidlab raised an unexpected error (a bug: please report it with this line): {detail}",
}


@dataclass
class CheckResult:
    """What a check found.

    Attributes:
        out_dir: the folder check.json, bad.jsonl, samples.jsonl and histograms.png are in.
        report: the contents of check.json.
        bad: one dict per bad record (file, index, line, id, kind, reason), in file order: bad.jsonl,
            read from the file when used.
        samples: one dict per usable record (file, index, line, id, duration, frames, visual_tokens,
            visual_tokens_before_pruning, text_tokens, label_tokens, total_tokens, shrunk), in file
            order: samples.jsonl, read from the file when used.
        histograms: the PNG (None when no record was usable).
        cleaned: the cleaned copies written (cleaned=True).
    """

    out_dir: Path
    report: dict
    bad: Sequence[dict]
    samples: Sequence[dict]
    histograms: Path | None = None
    cleaned: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.report["ok"]


METHODS = ("sft", "grpo", "dpo")


def _rl_records(files: list[Path], data_root: Path | None, method: str) -> tuple[list[TrainRecord], list]:
    """GRPO or DPO records read as training reads them (bad ones named with their field and fix), each as a
    TrainRecord whose conversation is the prompt and its longest answer, for decoding and token counts."""
    from vidlab.conversation import TextPart, Turn
    from vidlab.training.rl_records import load_prompt_records

    prompts, skipped = load_prompt_records(files, data_root, method)
    records = []
    for i, prompt in enumerate(prompts):
        answer = prompt.reference.answer if method == "grpo" else max(prompt.chosen, prompt.rejected, key=len)
        turns = [*prompt.prompt.turns, Turn(role="assistant", parts=[TextPart(text=answer)])]
        records.append(TrainRecord(prompt.position, prompt.id, i, prompt.prompt.model_copy(update={"turns": turns}),
                                   prompt.data_root))
    return records, skipped


def _resolve(files, config, model, data_root, settings, max_length, method):
    """(files, model, data_root, settings, max_length, method), from the config where it is given."""
    if method is not None and method not in METHODS:
        raise VidlabError(f"--method {method!r}: use sft (the usual records), grpo or dpo.")
    if config is not None:
        from vidlab.training.config import TrainConfig, load_config

        train = config if isinstance(config, TrainConfig) else load_config(config, check_paths=False)
        method = method or (train.method if train.method in ("grpo", "dpo") else "sft")
        files = files or list(train.data.train)
        model = model or train.model.path
        data_root = data_root if data_root is not None else train.data.data_root
        settings = settings or train.data.media_settings()
        max_length = max_length or train.data.model_max_length
    if model is None:
        raise VidlabError("vidlab data check needs the model's processor to count tokens: give --config TRAIN.yaml "
                          "(the settings training will use) or --model MODEL.")
    if not files:
        raise VidlabError("no annotation files to check: give FILE arguments, or --config with data.train.")
    return ([Path(f).expanduser() for f in files], str(model), data_root, settings or MediaSettings(),
            max_length or DEFAULT_MAX_LENGTH, method or "sft")


def _place(file: Any, index: int, line: int, record_id: str | None) -> dict:
    return {"file": str(file), "index": index, "line": line, "id": record_id}


def _position(records: Sequence[TrainRecord], i: int):
    """Record i's position, without parsing it where the records are a file's index."""
    if isinstance(records, TrainRecords):
        file_number, number = (int(v) for v in records.picks[i])
        return records.indexes[file_number].position(number)
    return records[i].position


def _places(records: Sequence[TrainRecord]) -> Iterator[dict]:
    """Each record's place (file, index, line, id), in order; from a file's index only its JSON is read again."""
    if not isinstance(records, TrainRecords):
        for record in records:
            yield _place(record.file, record.position.index, record.line, record.id)
        return
    for begin in range(0, len(records), _CHUNK):
        for file_number, number in records.picks[begin:begin + _CHUNK].tolist():
            raw = records.indexes[file_number][number]
            yield _place(raw.position.file, raw.position.index, raw.position.line, raw.id)


def _read_keys(count: int, workers: int, timeout: float, progress: bool, init: tuple) -> np.ndarray:
    """(count, 4) 16-byte digests a record: content, cache key, media, id (`check_keys`), read by the workers."""
    from tqdm import tqdm

    table = np.zeros((count, check_keys.ROW_BYTES), dtype=np.uint8)
    tasks = [(begin, ("keys", begin, min(begin + _CHUNK, count))) for begin in range(0, count, _CHUNK)]
    bar = tqdm(total=count, desc="reading records", unit="record", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    try:
        if workers == 0:
            outcomes = ((key, part) for key, task in tasks for part in check_sample.work(task))
        else:
            pool = TimedPool(check_sample.work, workers, max(timeout, 600.0), initializer=check_sample.prepare,
                             initargs=init, streaming=True)
            outcomes = pool.run(tasks)
        for begin, outcome in outcomes:
            if isinstance(outcome, TaskFailure):
                raise VidlabError(f"reading records {begin} to {min(begin + _CHUNK, count) - 1} for the check "
                                  f"failed ({outcome.kind}: {outcome.detail.strip()}); run with --workers 0 to see "
                                  "where.")
            _, rows = outcome
            block = np.frombuffer(rows, dtype=np.uint8).reshape(-1, check_keys.ROW_BYTES)
            table[begin:begin + len(block)] = block
            bar.update(len(block))
    finally:
        bar.close()
    return table


def _column(table: np.ndarray, which: int) -> np.ndarray:
    """One digest column of the keys table as 16-byte strings (sortable, comparable)."""
    size = check_keys.DIGEST_BYTES
    return np.ascontiguousarray(table[:, which * size:(which + 1) * size]).view(f"S{size}").ravel()


def _duplicates(records: Sequence[TrainRecord], table: np.ndarray) -> tuple[np.ndarray, int, dict[str, list[str]]]:
    """Per record, the number of the earlier record it repeats (-1: none); how many ids several records use; the
    first ten of those ids (by first use) with the place of every record using it."""
    count = len(records)
    _, first, inverse = np.unique(_column(table, 0), return_index=True, return_inverse=True)
    repeats = first[inverse.ravel()]
    repeats[repeats == np.arange(count)] = -1
    ids = _column(table, 3)
    unique, first, counts = np.unique(ids, return_index=True, return_counts=True)
    shared = np.nonzero(counts > 1)[0]
    examples = {}
    for k in shared[np.argsort(first[shared])][:10]:
        users = np.nonzero(ids == unique[k])[0]
        examples[records[int(users[0])].id] = [str(_position(records, int(i))) for i in users]
    return repeats, len(shared), examples


def _groups(todo: np.ndarray, media: np.ndarray) -> list[np.ndarray]:
    """The records to measure in tasks of records that share their media (at most _GROUP a task)."""
    if not len(todo):
        return []
    keys = media[todo]
    order = np.argsort(keys, kind="stable")
    todo, keys = todo[order], keys[order]
    starts = np.concatenate([[0], np.nonzero(keys[1:] != keys[:-1])[0] + 1, [len(todo)]])
    tasks = []
    for begin, end in zip(starts[:-1], starts[1:]):
        tasks += [todo[at:min(at + _GROUP, end)] for at in range(begin, end, _GROUP)]
    return tasks


def _failure(outcome: TaskFailure) -> dict:
    reason = _FAILURE_REASONS[outcome.kind].format(detail=outcome.detail.strip())
    return {"ok": False, "kind": outcome.kind, "reason": reason}


def _run(records: Sequence[TrainRecord], groups: list[np.ndarray], keys: np.ndarray, workers: int, timeout: float,
         progress: bool, cache: CheckCache, results: Results, init: tuple) -> None:
    """Measure the records of each group (their media decoded once a task) into `results`, appending each to the
    cache under its key digest.

    A task that times out or crashes before its first record is done fails every record in it (they
    share the media that hung or crashed the decoder); one that fails later fails the record it was
    on, and the rest of the task is measured again in a new task.
    """
    from tqdm import tqdm

    tasks = dict(enumerate(groups))
    done = dict.fromkeys(tasks, 0)
    bar = tqdm(total=len(records), initial=len(records) - sum(len(g) for g in groups), desc="checking records",
               unit="record", file=sys.stderr, disable=not progress, dynamic_ncols=True)

    def finish(i: int, result: dict) -> None:
        cache.put(keys[i:i + 1].tobytes(), result)
        results.put(i, result)
        bar.update(1)

    try:
        if workers == 0:
            outcomes = ((key, part) for key, group in tasks.items() for part in check_sample.work(("measure", group)))
            pool = None
        else:
            # Under fork the workers inherit the processor and records here; under spawn `prepare` loads them.
            pool = TimedPool(check_sample.work, workers, timeout, initializer=check_sample.prepare, initargs=init,
                             streaming=True)
            outcomes = pool.run((key, ("measure", group)) for key, group in tasks.items())
        for key, outcome in outcomes:
            group = tasks[key]
            if not isinstance(outcome, TaskFailure):
                number, result = outcome
                done[key] += 1
                finish(number, _failure(result) if isinstance(result, TaskFailure) else result)
                continue
            at = done[key]
            failed = group[at:] if at == 0 else group[at:at + 1]
            for number in failed:
                finish(int(number), _failure(outcome))
            rest = group[at + len(failed):]
            if len(rest) and pool is not None:
                again = max(tasks) + 1
                tasks[again], done[again] = rest, 0
                pool.requeue((again, ("measure", rest)))
    finally:
        bar.close()
        cache.close()


def _bad_rows(records: Sequence[TrainRecord], skipped: list, results: Results, repeats: np.ndarray,
              files: list[Path]) -> Iterator[dict]:
    """bad.jsonl's rows in file order: the records reading skipped, and those the check found bad."""
    order = {str(f): i for i, f in enumerate(files)}

    def sort_key(row: dict) -> tuple[int, int]:
        return order.get(row["file"], len(order)), row["index"]

    notes = sorted(({**_place(note.file, note.index, note.line, note.id), "kind": note.kind, "reason": note.reason}
                    for note in skipped), key=sort_key)

    def found() -> Iterator[dict]:
        bad = np.nonzero((results.state == BAD) | (repeats >= 0))[0]
        for i in bad.tolist():
            position = _position(records, i)
            place = _place(position.file, position.index, position.line, _id(records, i))
            if repeats[i] >= 0:
                yield {**place, "kind": "duplicate",
                       "reason": f"the same conversation and media as {_position(records, int(repeats[i]))}; drop one"}
            else:
                kind, reason = results.failure(i)
                yield {**place, "kind": kind, "reason": reason}

    yield from heapq.merge(notes, sorted(found(), key=sort_key) if not isinstance(records, TrainRecords)
                           else found(), key=sort_key)


def _id(records: Sequence[TrainRecord], i: int) -> str:
    if isinstance(records, TrainRecords):
        file_number, number = (int(v) for v in records.picks[i])
        return records.indexes[file_number][number].id
    return records[i].id


def _sample_rows(records: Sequence[TrainRecord], results: Results) -> Iterator[dict]:
    for i, place in enumerate(_places(records)):
        if results.state[i] == OK:
            yield {**place, **results.sample(i)}


def _lines(rows: Iterable[dict], seen: Callable[[dict], None] | None = None) -> Iterator[bytes]:
    for row in rows:
        if seen is not None:
            seen(row)
        yield (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")


def _cleaned_copies(files: list[Path], bad_places: dict[str, array.array]) -> list[Path]:
    """Each file without its bad records, which are known by (file, index): records of a JSON list share lines."""
    written = []
    for file in files:
        bad = np.unique(np.frombuffer(bad_places.get(str(file), array.array("q")), dtype=np.int64)).tolist()

        def kept(file=file, bad=bad) -> Iterator[bytes]:
            at = 0
            for raw in read_records(file):
                while at < len(bad) and bad[at] < raw.position.index:
                    at += 1
                if at < len(bad) and bad[at] == raw.position.index:
                    continue
                yield (json.dumps(raw.item, ensure_ascii=False) + "\n").encode("utf-8")

        written.append(write_atomic(file.with_name(f"{file.stem}.clean.jsonl"), kept()))
    return written


def check_data(
    files: list[str | Path] | None = None,
    *,
    config: str | Path | Any | None = None,
    model: str | Path | None = None,
    data_root: str | Path | None = None,
    out_dir: str | Path = "data-check",
    settings: MediaSettings | None = None,
    max_length: int | None = None,
    workers: int = 2,
    timeout: float = 120.0,
    cleaned: bool = False,
    cache: bool = True,
    progress: bool = True,
    method: str | None = None,
) -> CheckResult:
    """Check annotation files as training would read them.

    Args:
        files: annotation files (default: the config's data.train).
        config: a training config (path, mapping or TrainConfig): its model, data root, media
            settings and model_max_length are used, so the check sees what training will.
        model: the model whose processor counts tokens (default: the config's model.path).
        data_root: folder media paths are relative to (default: the config's, else each file's folder).
        out_dir: where check.json, bad.jsonl, samples.jsonl, histograms.png and the cache go.
        settings, max_length: without a config: the media settings and the token limit per sample
            (defaults: vidlab's, and 16384 as in training).
        workers: decoding processes (0: in this process, without a time limit; for debugging).
        timeout: seconds one record may take to decode and encode before it counts as bad.
        cleaned: also write <name>.clean.jsonl beside each file, without the bad records.
        cache: reuse what an earlier check in out_dir measured (unchanged records, same settings).
        progress: show a progress bar on stderr.
        method: the records' layout: sft (the usual records), grpo (a checkable last gpt answer, optional
            answer_type) or dpo (chosen / rejected pairs); default: the config's method, else sft. GRPO
            and DPO records are measured as their prompt and their (longest) answer.

    Raises:
        VidlabError: no model or files, a file that cannot be read at all, a processor that does not load.
    """
    start = time.monotonic()
    if workers < 0 or timeout <= 0:
        raise VidlabError("--workers must be 0 or more and --timeout above 0.")
    files, model, data_root, settings, max_length, method = _resolve(files, config, model, data_root, settings,
                                                                     max_length, method)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    root = Path(data_root).expanduser() if data_root is not None else None
    records, skipped = load_records(files, root) if method == "sft" else _rl_records(files, root, method)
    fingerprint = processor_fingerprint(model)
    init = (model, settings.model_dump_json(), max_length, None, records, fingerprint)
    check_sample.prepare(*init)
    table = _read_keys(len(records), workers, timeout, progress, init)
    repeats, shared_ids, shared_examples = _duplicates(records, table)
    keys, media = _column(table, 1), _column(table, 2)
    del table

    results = Results(len(records))
    store = CheckCache(out, enabled=cache)
    offsets = store.find(keys)
    offsets[repeats >= 0] = -1
    for i in np.nonzero(offsets >= 0)[0].tolist():
        found = store.result_at(int(offsets[i]))
        if found is not None:
            results.put(i, found, cached=True)
    del offsets
    todo = np.nonzero((repeats < 0) & (results.state == UNSET))[0]
    _run(records, _groups(todo, media), keys, workers, timeout, progress, store, results, init)
    del keys, media

    kinds: Counter = Counter()
    bad_places: dict[str, array.array] = {}

    def count_bad(row: dict) -> None:
        kinds[row["kind"]] += 1
        if cleaned:
            bad_places.setdefault(row["file"], array.array("q")).append(row["index"])

    write_atomic(out / "bad.jsonl", _lines(_bad_rows(records, skipped, results, repeats, files), count_bad))
    write_atomic(out / "samples.jsonl", _lines(_sample_rows(records, results)))
    usable = results.state == OK
    values = {key: results.values(key, usable) for key in (*MEASURES, "visual_tokens_before_pruning", "label_tokens")}
    ok = int(usable.sum())
    longest = None
    if ok:
        totals = np.where(usable, results.sizes[:, _TOTAL], -1)
        best = int(np.argmax(totals))
        position = _position(records, best)
        longest = {**_place(position.file, position.index, position.line, _id(records, best)),
                   "total_tokens": int(totals[best])}
    shrunk = int(((results.shrunk >= 0) & usable).sum())
    report = {
        "files": [str(f) for f in files],
        "data_root": None if data_root is None else str(data_root),
        "model": model,
        "settings": settings.model_dump(mode="json"),
        "model_max_length": max_length,
        "method": method,
        "records": len(records) + len(skipped),
        "ok": ok,
        "bad": sum(kinds.values()),
        "bad_by_kind": dict(kinds.most_common()),
        "budget": {
            "model_max_length": max_length,
            "shrunk": shrunk,
            "skipped": kinds.get("over budget", 0),
        },
        "stats": distributions(values),
        "longest": longest,
        "duplicates": {
            "records": int((repeats >= 0).sum()),
            "shared_ids": shared_ids,
            "shared_id_examples": shared_examples,
        },
        "cached": int(results.cached.sum()),
        "seconds": round(time.monotonic() - start, 2),
    }
    histograms = save_histograms(values, ok, out / "histograms.png", max_length)
    copies = _cleaned_copies(files, bad_places) if cleaned else []
    write_json(out / "check.json", report)
    return CheckResult(out, report, JsonlRows(out / "bad.jsonl"), JsonlRows(out / "samples.jsonl"), histograms,
                       copies)
