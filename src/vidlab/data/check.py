"""`vidlab data check`: every record read, decoded and encoded as training would, before training.

Records are read with `vidlab.training.data.load_records` and encoded with `encode_record` (the
same calls, the same settings as `vidlab train` with the same config), each in a worker process
with a time limit. The result says which records training would skip and why (with file:line),
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
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidlab.annotations import read_records
from vidlab.data import check_sample
from vidlab.data.check_cache import CheckCache, cache_key, content_key, processor_fingerprint
from vidlab.data.check_pool import TaskFailure, TimedPool
from vidlab.data.check_stats import distributions, save_histograms
from vidlab.errors import VidlabError
from vidlab.files import write_json, write_jsonl
from vidlab.settings import MediaSettings
from vidlab.training.data import TrainRecord, load_records

DEFAULT_MAX_LENGTH = 16384  # the training config's data.model_max_length default
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
        bad: one dict per bad record (file, index, line, id, kind, reason), in file order.
        samples: one dict per usable record (file, index, line, id, duration, frames, visual_tokens,
            visual_tokens_before_pruning, text_tokens, total_tokens, shrunk), in file order.
        histograms: the PNG (None when no record was usable).
        cleaned: the cleaned copies written (cleaned=True).
    """

    out_dir: Path
    report: dict
    bad: list[dict]
    samples: list[dict]
    histograms: Path | None = None
    cleaned: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return len(self.samples)


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


def _duplicates(records: list[TrainRecord]) -> tuple[dict[int, str], dict[str, list[str]]]:
    """Records that repeat an earlier one (index -> the first's file:line), and ids used more than once."""
    first: dict[str, str] = {}
    repeats: dict[int, str] = {}
    by_id: dict[str, list[str]] = {}
    for record in records:
        key = content_key(record)
        if key in first:
            repeats[record.index] = first[key]
        else:
            first[key] = record.source
        by_id.setdefault(record.id, []).append(record.source)
    shared = {record_id: places for record_id, places in by_id.items() if len(places) > 1}
    return repeats, shared


def _run(records: list[TrainRecord], workers: int, timeout: float, progress: bool, cache: CheckCache,
         keys: dict[int, str], init: tuple) -> dict[int, dict]:
    from tqdm import tqdm

    results: dict[int, dict] = {}
    todo = []
    for record in records:
        cached = cache.get(keys[record.index])
        if cached is not None:
            results[record.index] = {**cached, "cached": True}
        else:
            todo.append(record)
    bar = tqdm(total=len(records), initial=len(results), desc="checking records", unit="record", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    try:
        if workers == 0:
            outcomes = ((record.index, check_sample.measure(record)) for record in todo)
        else:
            # Under fork the workers inherit the processor loaded here; under spawn `prepare` loads it in each.
            pool = TimedPool(check_sample.measure, workers, timeout, initializer=check_sample.prepare, initargs=init)
            outcomes = pool.run((record.index, record) for record in todo)
        for index, outcome in outcomes:
            if isinstance(outcome, TaskFailure):
                reason = _FAILURE_REASONS[outcome.kind].format(detail=outcome.detail.strip())
                outcome = {"ok": False, "kind": outcome.kind, "reason": reason}
            cache.put(keys[index], outcome)
            results[index] = outcome
            bar.update(1)
    finally:
        bar.close()
        cache.close()
    return results


def _cleaned_copies(files: list[Path], bad_places: set[tuple[str, int]]) -> list[Path]:
    """Each file without its bad records, which are known by (file, index): records of a JSON list share lines."""
    written = []
    for file in files:
        rows = [raw.item for raw in read_records(file) if (str(file), raw.position.index) not in bad_places]
        written.append(write_jsonl(file.with_name(f"{file.stem}.clean.jsonl"), rows))
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
    init = (model, settings.model_dump_json(), max_length)
    check_sample.prepare(*init)
    fingerprint = processor_fingerprint(model)
    keys = {r.index: cache_key(r, settings, max_length, fingerprint) for r in records}
    repeats, shared_ids = _duplicates(records)
    measured = _run([r for r in records if r.index not in repeats], workers, timeout, progress,
                    CheckCache(out, enabled=cache), keys, init)

    bad = [{**_place(note.file, note.index, note.line, note.id), "kind": note.kind, "reason": note.reason}
           for note in skipped]
    samples = []
    for record in records:
        place = _place(record.file, record.position.index, record.line, record.id)
        if record.index in repeats:
            bad.append({**place, "kind": "duplicate",
                        "reason": f"the same conversation and media as {repeats[record.index]}; drop one"})
            continue
        result = measured[record.index]
        if result["ok"]:
            samples.append({**place, **{k: v for k, v in result.items() if k not in ("ok", "cached")}})
        else:
            bad.append({**place, "kind": result["kind"], "reason": result["reason"]})
    order = {str(f): i for i, f in enumerate(files)}
    bad.sort(key=lambda row: (order.get(row["file"], len(order)), row["index"]))

    longest = max(samples, key=lambda s: s["total_tokens"], default=None)
    report = {
        "files": [str(f) for f in files],
        "data_root": None if data_root is None else str(data_root),
        "model": model,
        "settings": settings.model_dump(mode="json"),
        "model_max_length": max_length,
        "method": method,
        "records": len(records) + len(skipped),
        "ok": len(samples),
        "bad": len(bad),
        "bad_by_kind": dict(Counter(row["kind"] for row in bad).most_common()),
        "budget": {
            "model_max_length": max_length,
            "shrunk": sum(1 for s in samples if s["shrunk"]),
            "skipped": sum(1 for row in bad if row["kind"] == "over budget"),
        },
        "stats": distributions(samples),
        "longest": None if longest is None else {k: longest[k]
                                                 for k in ("file", "index", "line", "id", "total_tokens")},
        "duplicates": {
            "records": len(repeats),
            "shared_ids": len(shared_ids),
            "shared_id_examples": dict(list(shared_ids.items())[:10]),
        },
        "cached": sum(1 for r in measured.values() if r.get("cached")),
        "seconds": round(time.monotonic() - start, 2),
    }
    write_json(out / "check.json", report)
    write_jsonl(out / "bad.jsonl", bad)
    write_jsonl(out / "samples.jsonl", samples)
    histograms = save_histograms(samples, out / "histograms.png", max_length)
    copies = _cleaned_copies(files, {(row["file"], row["index"]) for row in bad}) if cleaned else []
    return CheckResult(out, report, bad, samples, histograms, copies)
