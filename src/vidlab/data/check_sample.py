"""One record checked as training reads it: decoded and encoded with `vidlab.training.data.encode_record`.

Runs in the check's worker processes. `prepare` sets the processor and settings once per process
(inherited under fork, loaded by the initializer under spawn); `measure` then turns a TrainRecord
into its sizes, or into the kind and reason of its failure.
"""

from __future__ import annotations

from pathlib import Path

from vidlab.annotations import reason_of
from vidlab.errors import SampleError
from vidlab.record_kinds import kind_of
from vidlab.settings import MediaSettings
from vidlab.training.data import TrainRecord, encode_record

_STATE: dict = {}


def load_processor(model: str):
    """The model's processor (no weights), quietly."""
    from transformers import AutoProcessor
    from transformers.utils import logging as hf_logging

    from vidlab.errors import ModelLoadError
    from vidlab.models.load import check_model_folder, looks_local

    hf_logging.set_verbosity_error()
    if looks_local(model):
        check_model_folder(Path(model).expanduser())
    try:
        return AutoProcessor.from_pretrained(str(Path(model).expanduser()) if looks_local(model) else model)
    except OSError as err:
        raise ModelLoadError(f"{model}: could not load its processor ({err}). Pass a local checkpoint folder, or "
                             "a hub id on a machine that can reach the hub.") from err


def prepare(model: str, settings_json: str, max_length: int, processor=None) -> None:
    """Set what `measure` uses in this process; loads the processor unless given (or already loaded)."""
    if processor is None and _STATE.get("model") == model:
        processor = _STATE["processor"]
    _STATE.update(model=model, processor=processor or load_processor(model),
                  settings=MediaSettings.model_validate_json(settings_json), max_length=max_length)


def _seconds(record: TrainRecord, sampling) -> float | None:
    """Seconds of video the record uses (its clip windows, summed over its videos), from the frame tables."""
    from vidlab.media.table import read_frame_table

    total, any_video = 0.0, False
    for part in record.conversation.media:
        if part.type != "video":
            continue
        any_video = True
        path = Path(part.path).expanduser()
        path = path if path.is_absolute() else record.data_root / path
        if path.is_dir():
            length = sum(1 for p in path.iterdir() if p.is_file()) / sampling.folder_fps
        else:
            length = read_frame_table(path).end
        end = length if part.end is None else min(part.end, length)
        total += max(0.0, end - (part.start or 0.0))
    return round(total, 3) if any_video else None


def measure(record: TrainRecord) -> dict:
    """The record's sizes as training would see them, or {"ok": False, "kind", "reason"}."""
    settings: MediaSettings = _STATE["settings"]
    try:
        sample = encode_record(record, _STATE["processor"], settings, _STATE["max_length"])
    except SampleError as err:
        return {"ok": False, "kind": kind_of(err), "reason": reason_of(err, record.source)}
    stats = sample.stats
    duration = _seconds(record, settings)
    return {
        "ok": True,
        "duration": duration,
        "frames": sum(len(stamps) for stamps in stats.frames) if duration is not None else None,
        "visual_tokens": stats.visual_tokens,
        "visual_tokens_before_pruning": stats.visual_tokens_before_pruning,
        "text_tokens": stats.text_tokens,
        "label_tokens": int((sample.tensors["labels"][1:] != -100).sum()),  # where training builds logits
        "total_tokens": len(sample),
        "shrunk": sample.shrunk,
    }
