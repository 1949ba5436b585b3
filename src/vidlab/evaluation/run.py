"""Predictions for an evaluation set: batched, resumable, and sharded over processes.

`predictions.jsonl` grows one flushed line per answered record, so a run killed at any moment
keeps every finished answer; running the same command again answers only what is missing.
Under `accelerate launch` (or torchrun) each process answers its share of the missing records
(accelerate's `split_between_processes`) into its own part file, and process 0 merges the parts
into `predictions.jsonl` in data-set order.
"""

from __future__ import annotations

import array
import json
import os
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from vidlab.conversation import Conversation, TextPart
from vidlab.errors import DataFileError, EvaluationError, VidlabError
from vidlab.evaluation.records import EvalRecord, EvalRecords, EvalSet, Skipped, id_digest, id_digests
from vidlab.evaluation.sets import load_eval_set
from vidlab.files import LineAppender, read_jsonl, reason_of, write_atomic, write_json, write_jsonl
from vidlab.generate import generate_batch
from vidlab.inputs import collate, encode, load_media
from vidlab.media.cache import MediaCache
from vidlab.settings import DECODE_WORKERS, GenerationOptions, MediaSettings
from vidlab.vision_cache import VisionCache

PREDICTIONS = "predictions.jsonl"
SKIPPED = "skipped.jsonl"
RUN_INFO = "run.json"
PART_GLOB = "predictions.part-*.jsonl"
SKIPPED_PART_GLOB = "skipped.part-*.jsonl"
# run.json keys that must match for a rerun to continue a folder's predictions.
SAME_RUN_KEYS = ("model", "adapter", "data", "format", "split", "settings", "max_new_tokens", "temperature",
                 "subtitles", "quantize")
# Errors that cost one record (a corrupt file the decoder chokes on, a processor that rejects a
# picture, out of memory on a long video) rather than the run. Other exceptions are bugs.
RECORD_ERRORS = (VidlabError, ValueError, RuntimeError, OSError, EOFError)


@dataclass(frozen=True)
class RunOptions:
    """How to run an evaluation.

    Attributes:
        batch_size: records generated together (left-padded); greedy answers do not depend on it.
        limit: only the first N records of the data file.
        settings: frame sampling, visual-token budget, image merge size and DiffFP.
        generation: decoding settings (greedy by default).
        workers: threads decoding the next records' media while the model generates (0: none; default:
            one per core, at most 8).
        progress: show a progress bar (process 0 only).
    """

    batch_size: int = 1
    limit: int | None = None
    settings: MediaSettings = MediaSettings()
    generation: GenerationOptions = GenerationOptions()
    workers: int = DECODE_WORKERS
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1 (got {self.batch_size})")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1 (got {self.limit})")
        if self.workers < 0:
            raise ValueError(f"workers must be 0 or more (got {self.workers})")


@dataclass
class RunResult:
    out_dir: Path
    records: int  # readable records in the data set (after --limit)
    predictions: int  # lines in predictions.jsonl after the run (process 0; others: their own new ones)
    answered: int  # new predictions of this call (process 0: of all processes; others: their own)
    skipped: list[Skipped] = field(default_factory=list)
    is_main: bool = True  # process 0 (or the only process): it merged the files


@dataclass
class _Processes:
    state: object = None  # accelerate's PartialState when there are several processes
    owns_group: bool = False  # this call set the process group up, so it takes it down

    @property
    def rank(self) -> int:
        return self.state.process_index if self.state is not None else 0

    @property
    def world(self) -> int:
        return self.state.num_processes if self.state is not None else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self):
        return self.state.device if self.state is not None else None

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def share(self, records: Sequence) -> Sequence:
        """This process's part of `records` (all of them on a single process): accelerate splits their
        positions, so records read from the file when used (`EvalRecords`) are split without reading them."""
        if self.state is None:
            return records
        import torch

        with self.state.split_between_processes(torch.arange(len(records))) as mine:
            return records[int(mine[0]):int(mine[-1]) + 1] if len(mine) else records[:0]


def _processes() -> _Processes:
    """The process group set up by accelerate launch / torchrun, or a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _Processes()
    import torch
    import torch.distributed as dist
    from accelerate import PartialState

    owns_group = not dist.is_initialized()  # else a caller (the trainer) owns it and goes on using it
    # Without a GPU, accelerate sets up gloo only when asked for the CPU explicitly.
    return _Processes(PartialState(cpu=not torch.cuda.is_available()), owns_group)


def _end_processes(processes: _Processes) -> None:
    if processes.world > 1 and processes.owns_group:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _missing(records: Sequence[EvalRecord], done: np.ndarray) -> Sequence[EvalRecord]:
    """The records whose id is not among the answered ones (digests)."""
    if isinstance(records, EvalRecords):
        return records.not_in(done)
    answered = np.isin(id_digests(record.id for record in records), done)
    return [record for record, seen in zip(records, answered.tolist()) if not seen]


def _run_info(model_name: str, adapter, data: EvalSet, options: RunOptions, subtitles: bool,
              quantize: str | None) -> dict:
    from vidlab import __version__

    return {
        "model": model_name,
        "adapter": str(adapter) if adapter is not None else None,
        "data": str(data.path.resolve()),
        "format": data.format,
        "split": data.split,
        "data_root": str(data.data_root.resolve()),  # absolute: read from any folder (the web page's Results)
        "settings": options.settings.model_dump(),
        "max_new_tokens": options.generation.max_new_tokens,
        "temperature": options.generation.temperature,
        "subtitles": subtitles,
        "quantize": quantize,  # quantized weights answer differently: another run
        "vidlab": __version__,
    }


def _check_same_run(out_dir: Path, info: dict, keys: tuple[str, ...] = SAME_RUN_KEYS, section: str | None = None
                    ) -> None:
    """Refuse a folder whose predictions came from a run that differs in `keys` (of run.json's `section`: then
    every key counts; at the top level only the keys the earlier run.json has)."""
    path = out_dir / RUN_INFO
    if not path.is_file() or not (out_dir / PREDICTIONS).exists():
        return
    try:
        before = json.loads(path.read_text())
    except json.JSONDecodeError:
        return
    then, now = (before.get(section) or {}, info[section]) if section else (before, info)
    changed = [k for k in keys if (section or k in then) and then.get(k) != now[k]]
    if changed:
        label = f"{section} " if section else ""
        details = "; ".join(f"{label}{k}: {then.get(k)!r} then, {now[k]!r} now" for k in changed)
        raise EvaluationError(
            f"{out_dir}: holds predictions of a different run ({details}). Use another --out folder, "
            "or delete this one to start over."
        )


def _prediction_lines(path: Path) -> Iterator[tuple[int, int, str, bool]]:
    """(byte offset, length, id, last) of each row of a predictions file, read a line at a time; a
    half-written last line (a killed run's) is left out, as `read_jsonl(torn_tail_ok=True)` does."""
    offset = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as err:
                if not raw.endswith(b"\n"):
                    return  # the last line, cut off in the middle
                raise DataFileError(
                    f"{path}:{number}: not a JSON object ({err.msg}). Fix or delete that line and run again."
                ) from err
            if not isinstance(row, dict):
                raise DataFileError(f"{path}:{number}: expected a JSON object per line. Fix or delete that line.")
            if "id" not in row:
                raise EvaluationError(f"{path}:{number}: a line has no \"id\". Delete that line and run again.")
            yield start, len(raw), str(row["id"]), raw.endswith(b"\n")


def answered_ids(path: Path) -> np.ndarray:
    """The id digests (`id_digests`) of the rows of a predictions file; empty where there is none."""
    if not path.exists():
        return id_digests([])
    return id_digests(record_id for _, _, record_id, _ in _prediction_lines(path))


def merge_predictions(out_dir: Path, order: Mapping[str, int]) -> int:
    """Fold the part files and a possibly half-written last line into one clean predictions.jsonl.

    Each record id is kept once (its first line); rows are put in data-set order, rows of records
    no longer in the data set after them. Rows are not held: each line's place is noted, and where
    anything moves the lines are copied in order into a new file, written atomically; the part files
    are then removed. Returns the number of rows.
    """
    sources = [source for source in [out_dir / PREDICTIONS, *sorted(out_dir.glob(PART_GLOB))] if source.exists()]
    places, digests, whole = array.array("q"), bytearray(), True  # (source, offset, length, order) per row
    for number, source in enumerate(sources):
        size, end = source.stat().st_size, 0
        for offset, length, record_id, complete in _prediction_lines(source):
            places.extend((number, offset, length, order.get(record_id, len(order))))
            digests += id_digest(record_id)
            whole = whole and complete and offset == end  # no blank line before it, a newline after it
            end = offset + length
        whole = whole and end == size  # nothing dropped at the end (a torn line)
    rows = np.frombuffer(places, dtype=np.int64).reshape(-1, 4)
    _, first = np.unique(np.frombuffer(digests, dtype="S16"), return_index=True)
    kept = np.sort(first)  # the first line of each id, in file order
    kept = kept[np.argsort(rows[kept, 3], kind="stable")]  # then in data-set order
    unchanged = len(sources) == 1 and whole and np.array_equal(kept, np.arange(len(rows)))
    if sources and not unchanged:
        write_atomic(out_dir / PREDICTIONS, _copied_lines(sources, rows[kept]))
    for part in sources:
        if part.name != PREDICTIONS:
            part.unlink()
    return len(kept)


def _copied_lines(sources: list[Path], rows: np.ndarray) -> Iterator[bytes]:
    handles = [os.open(source, os.O_RDONLY) for source in sources]
    try:
        for number, offset, length, _ in rows.tolist():
            line = os.pread(handles[number], length, offset)
            yield line if line.endswith(b"\n") else line + b"\n"
    finally:
        for handle in handles:
            os.close(handle)


def _merge_skipped(out_dir: Path, at_load: list[Skipped]) -> list[Skipped]:
    found = list(at_load)
    for part in sorted(out_dir.glob(SKIPPED_PART_GLOB)):
        for row in read_jsonl(part, torn_tail_ok=True):
            found.append(Skipped(row["source"], row.get("id"), row["reason"], row.get("index", -1)))
        part.unlink()
    found.sort(key=lambda s: s.index)
    write_jsonl(out_dir / SKIPPED, [s.to_dict() for s in found])
    return found


def _with_media(
    records: Sequence[EvalRecord], data_root: Path, options: RunOptions, processor=None, cache: MediaCache | None = None
) -> Iterator[tuple[EvalRecord, list | Skipped]]:
    """Each record with its decoded media (or why not), decoding ahead in threads while the model works.

    With the processor, video frames are decoded straight to the size it will use; with a clip cache,
    a video several records ask about is decoded once.
    """
    settings = options.settings
    if settings.precise_time is None:  # clip windows as VideoLLaMA3's evaluation reads them (precise_time=True)
        settings = settings.model_copy(update={"precise_time": True})

    def load(record: EvalRecord):
        return load_media(record.conversation, processor, settings, data_root=data_root, cache=cache)

    def outcome(record: EvalRecord, get) -> list | Skipped:
        try:
            return get()
        except RECORD_ERRORS as err:
            return Skipped(record.source, record.id, reason_of(err, record.source), record.index)

    if options.workers == 0:
        for record in records:
            yield record, outcome(record, lambda r=record: load(r))
        return
    ahead = max(2 * options.batch_size, 2 * options.workers)
    with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="vidlab-media") as pool:
        pending = iter(records)
        window = deque((r, pool.submit(load, r)) for r in islice(pending, ahead))
        while window:
            record, future = window.popleft()
            following = next(pending, None)
            if following is not None:
                window.append((following, pool.submit(load, following)))
            yield record, outcome(record, future.result)


def _prompt_text(conversation: Conversation) -> str:
    """The last user turn as sent (subtitles put in), media shown as <video> / <image>."""
    turn = conversation.turns[-1]
    return "".join(p.text if isinstance(p, TextPart) else f"<{p.type}>\n" for p in turn.parts)


def record_row(record: EvalRecord, sent: Conversation, prediction: str) -> dict:
    """The keys of a predictions.jsonl row that come from the record, the prompt sent and the answer's text (the
    same in-process and through an endpoint)."""
    row = {
        "id": record.id,
        "source": record.source,
        "kind": record.kind,
        "prompt": _prompt_text(sent),  # what the model was asked, subtitles included
        "media": [part.path for part in record.conversation.media],
        "prediction": prediction,
        "references": record.references,
    }
    if record.kind == "choice":
        row["options"] = record.options
        row["answer"] = record.answer
    if record.meta:
        row["meta"] = record.meta
    if record.scoring:
        row["scoring"] = record.scoring  # how the benchmark scores this answer (see EvalRecord.scoring)
    return row


def _row(record: EvalRecord, sent: Conversation, answer, stats, seconds: float) -> dict:
    row = record_row(record, sent, answer.text)
    row.update(
        frames=[[round(t, 3) for t in times] for times in stats.frames],
        visual_tokens=stats.visual_tokens,
        visual_tokens_before_pruning=stats.visual_tokens_before_pruning,
        prompt_tokens=stats.total_tokens,
        generated_tokens=len(answer.token_ids),
        seconds=round(seconds, 4),
    )
    return row


def _skipped(record: EvalRecord, err: Exception) -> Skipped:
    return Skipped(record.source, record.id, f"{type(err).__name__}: {reason_of(err, record.source)}", record.index)


def _answer(model, processor, batch, options: RunOptions, vision_cache: VisionCache | None = None
            ) -> list[dict | Skipped]:
    """Answers for a batch; a record that cannot be encoded is skipped, and when generation fails for
    the batch each record is tried alone, so one bad record costs only itself."""
    results: list[dict | Skipped] = []
    encoded = []
    for record, media in batch:
        try:
            sent = record.conversation_for(media)
            encoded.append((record, sent, encode(sent, media, processor, options.settings)))
        except RECORD_ERRORS as err:
            results.append(_skipped(record, err))
    if not encoded:
        return results
    started = time.perf_counter()
    try:
        inputs = collate([sample for _, _, sample in encoded], processor.tokenizer.pad_token_id, "left")
        answers = generate_batch(model, processor, inputs, options.generation, vision_cache=vision_cache)
    except RECORD_ERRORS as err:
        if len(encoded) > 1:
            alone = [item for item in batch if any(item[0] is record for record, _, _ in encoded)]
            return results + [result for item in alone
                              for result in _answer(model, processor, [item], options, vision_cache)]
        _free_accelerator_memory()
        return results + [_skipped(encoded[0][0], err)]
    seconds = (time.perf_counter() - started) / len(encoded)
    results += [_row(record, sent, answer, stats, seconds)
                for (record, sent, _), answer, stats in zip(encoded, answers, inputs.stats)]
    return results


def _free_accelerator_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="samples", desc="eval", disable=not enabled, dynamic_ncols=True, smoothing=0.1)


def run_predictions(
    model,
    data: EvalSet | str | Path,
    out_dir: str | Path,
    *,
    adapter: str | Path | None = None,
    data_root: str | Path | None = None,
    format: str = "auto",
    subtitles: bool = False,
    options: RunOptions = RunOptions(),
    device: str = "auto",
    dtype: str = "auto",
    quantize: str | None = None,
) -> RunResult:
    """Answer every record of `data` that `out_dir/predictions.jsonl` does not hold yet.

    Args:
        model: a checkpoint folder or hub id, or a loaded `(model, processor)` pair.
        data: an `EvalSet`, or a data file / folder (read with `format`, `data_root`, `subtitles`).
        out_dir: where predictions.jsonl, skipped.jsonl and run.json go.
        adapter: a PEFT adapter folder to apply (when `model` is a path).
        options: batch size, limit, frame sampling, decoding; see `RunOptions`.
        device, dtype, quantize: as in `vidlab.load_model`; under accelerate, auto is each process's device.

    Returns:
        A `RunResult`; with several processes, process 0 has merged everything when it returns.
    """
    processes = _processes()
    try:
        return _run(processes, model, data, Path(out_dir), adapter, data_root, format, subtitles, options,
                    dict(device=device, dtype=dtype, quantize=quantize))
    finally:
        _end_processes(processes)


def _run(processes, model, data, out_dir, adapter, data_root, format, subtitles, options, loading: dict):
    if not isinstance(data, EvalSet):
        data = load_eval_set(data, data_root, format, subtitles)
    data = data.limited(options.limit)
    order = data.order()
    if isinstance(model, (str, Path)):
        model_name, loaded = str(model), None
    else:
        loaded = model
        model_name = str(getattr(model[0], "name_or_path", "") or "<loaded model>")
    info = _run_info(model_name, adapter, data, options, subtitles, loading["quantize"])

    if processes.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _check_same_run(out_dir, info)
        merge_predictions(out_dir, order)
        write_json(out_dir / RUN_INFO, info)
    processes.barrier()

    done = answered_ids(out_dir / PREDICTIONS)
    missing = _missing(data.records, done)
    mine = processes.share(missing)
    skipped: list[Skipped] = []
    answered = 0
    if mine:
        if loaded is None:
            from vidlab.models import load_model

            if loading["device"] == "auto" and processes.device is not None:
                loading = {**loading, "device": processes.device}
            loaded = load_model(model, adapter=adapter, **loading)
        model_obj, processor = loaded
        target = out_dir / (PREDICTIONS if processes.world == 1 else f"predictions.part-{processes.rank}.jsonl")
        bar = _progress(len(mine), options.progress and processes.is_main)
        # Records asking about the same video (several questions each, in most benchmarks) decode it
        # and run the vision encoder once.
        media_cache, vision_cache = MediaCache(), VisionCache()
        batch: list = []
        with LineAppender(target) as out:

            def flush() -> None:
                nonlocal answered
                for result in _answer(model_obj, processor, batch, options, vision_cache):
                    if isinstance(result, Skipped):
                        skipped.append(result)
                    else:
                        out.write(result)
                        answered += 1
                    bar.update(1)
                bar.set_postfix(skipped=len(skipped), refresh=False)
                batch.clear()

            for record, media in _with_media(mine, data.data_root, options, processor, media_cache):
                if isinstance(media, Skipped):
                    skipped.append(media)
                    bar.update(1)
                    continue
                batch.append((record, media))
                if len(batch) == options.batch_size:
                    flush()
            if batch:
                flush()
        bar.close()
    if processes.world > 1:
        write_jsonl(out_dir / f"skipped.part-{processes.rank}.jsonl", [{**s.to_dict(), "index": s.index}
                                                                         for s in skipped])
    processes.barrier()
    if processes.is_main:
        predictions = merge_predictions(out_dir, order)
        answered = predictions - len(done)  # every process's new answers
        all_skipped = _merge_skipped(out_dir, data.skipped + (skipped if processes.world == 1 else []))
    else:
        predictions, all_skipped = answered, skipped
    return RunResult(out_dir, len(data.records), predictions, answered, all_skipped, processes.is_main)
