"""Records checked as training reads them: decoded and encoded as `vidlab.training.data.encode_record` does.

Runs in the check's worker processes. `prepare` sets the processor, settings and records once per
process (inherited under fork, loaded by the initializer under spawn); `work` then runs one task:
("keys", start, stop) gives the digests of those records (`check_keys`), ("measure", numbers) the
sizes of records that share their media, or the kind and reason of each one's failure.

Records that share their media (a video asked about several times, with the same clip window) are
measured together: the media are decoded once, and the video processor's answer for the same frames
and arguments is reused (`SameFramesOnce`). A record that fits model_max_length without shrinking
then differs from the others only in its text: once one record of the group has been encoded in
full and its sizes found equal to what its text alone gives (`_TextOnly`), each further record costs
its chat template and tokenizer pass, with the processor's own text expansion and arguments. A
record that would shrink, or whose text the processor would refuse, is encoded in full. `measure`
checks one record the plain way (`encode_record`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidlab.annotations import reason_of
from vidlab.data.check_keys import record_digests
from vidlab.data.check_pool import TaskFailure
from vidlab.errors import MediaError, SampleError
from vidlab.record_kinds import kind_of
from vidlab.settings import MediaSettings
from vidlab.training.data import TrainRecord, _decoder_errors, encode_record

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


def prepare(model: str, settings_json: str, max_length: int, processor=None, records: Sequence | None = None,
            fingerprint: str = "") -> None:
    """Set what `measure` and `work` use in this process; loads the processor unless given (or already loaded)."""
    if processor is None and _STATE.get("model") == model:
        processor = _STATE["processor"]
    processor = processor or load_processor(model)
    _STATE.update(model=model, processor=processor, shared=_sharing(processor),
                  settings=MediaSettings.model_validate_json(settings_json), max_length=max_length,
                  records=records, fingerprint=fingerprint, identities={})


class SameFramesOnce:
    """The video processor, answering a call with the same frame arrays (the same objects) and the same
    arguments from the last calls. Hand-written: the arrays are matched by identity (they are the media a
    group of records shares, kept alive here so an identity is never reused), which no cache library does."""

    _KEEP = 8

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[tuple[list, str, Any]] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __call__(self, videos, **kwargs):
        signature = _signature(kwargs)
        if signature is None or not isinstance(videos, list):
            return self.inner(videos, **kwargs)
        for frames, known, result in self.calls:
            if known == signature and len(frames) == len(videos) and all(a is b for a, b in zip(frames, videos)):
                return result
        result = self.inner(videos, **kwargs)
        self.calls = [*self.calls[-(self._KEEP - 1):], (list(videos), signature, result)]
        return result

    def forget(self) -> None:
        self.calls = []


def _signature(kwargs: dict) -> str | None:
    """The arguments as text (metadata by value), or None where one is an array (not compared by value)."""
    def plain(value):
        if isinstance(value, (np.ndarray,)) or type(value).__module__.startswith("torch"):
            raise TypeError
        if dataclasses.is_dataclass(value):
            return repr(value)
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return repr(value)

    try:
        return repr(plain(kwargs))
    except TypeError:
        return None


def _sharing(processor):
    """A shallow copy of the processor whose video processor is a `SameFramesOnce` and whose text expansion and
    tokenizer are watched (`FirstCall`); None for a model family with its own encoder or no video processor."""
    if getattr(processor, "encode_conversation", None) is not None or getattr(processor, "video_processor",
                                                                               None) is None:
        return None
    shared = copy.copy(processor)
    shared.video_processor = SameFramesOnce(processor.video_processor)
    shared.get_text_with_replacements = FirstCall(processor.get_text_with_replacements)
    shared.tokenizer = FirstCall(processor.tokenizer)
    return shared


class FirstCall:
    """A callable that, once `arm`ed, remembers the arguments of its next call (the processor's first call
    for a record: the media's expansions and the tokenizer's arguments at the unshrunk size)."""

    def __init__(self, inner):
        self.inner = inner
        self.seen: tuple | None = None
        self.armed = False

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def arm(self) -> None:
        self.seen, self.armed = None, True

    def __call__(self, *args, **kwargs):
        if self.armed:
            self.seen, self.armed = (args, kwargs), False
        return self.inner(*args, **kwargs)


@dataclasses.dataclass
class _TextOnly:
    """What the records of a group that fit without shrinking share (from one record encoded in full), and how
    the processor expanded their media's placeholders and called its tokenizer."""

    images: list[str]
    videos: list[str]
    tokenizer_kwargs: dict
    shared: dict  # duration, frames, visual_tokens, visual_tokens_before_pruning

    @classmethod
    def of(cls, processor, result: dict) -> _TextOnly | None:
        expansions, tokenized = processor.get_text_with_replacements.seen, processor.tokenizer.seen
        if expansions is None or tokenized is None:
            return None
        args, kwargs = expansions
        named = dict(zip(("text", "images_replacements", "videos_replacements", "audio_replacements"), args))
        named.update(kwargs)
        if named.get("audio_replacements"):
            return None
        keys = ("duration", "frames", "visual_tokens", "visual_tokens_before_pruning")
        return cls(list(named.get("images_replacements", [])), list(named.get("videos_replacements", [])),
                   {k: v for k, v in tokenized[1].items() if k != "return_tensors"}, {k: result[k] for k in keys})

    def measure(self, record: TrainRecord, processor, max_length: int | None) -> dict | None:
        """The record's sizes from its text, or None where it must be encoded in full (it would shrink, or its
        placeholders are not the group's)."""
        from vidlab.inputs import IGNORE_INDEX, label_assistant_turns

        conversation = record.conversation
        prompt = conversation.turns[-1].role != "assistant"
        text = processor.apply_chat_template(conversation.to_messages(), tokenize=False, add_generation_prompt=prompt)
        video, image = processor.video_token, processor.image_token
        if text.count(video) != len(self.videos) or text.count(image) != len(self.images):
            return None
        expanded = processor.get_text_with_replacements.inner([text], list(self.images), list(self.videos))[0][0]
        ids = processor.tokenizer.inner([expanded], **self.tokenizer_kwargs)["input_ids"][0]
        if max_length is not None and len(ids) > max_length:
            return None
        if ids.count(processor.video_token_id) != expanded.count(video) or \
                ids.count(processor.image_token_id) != expanded.count(image):
            return None  # the processor refuses such a text: encoded in full, it says why
        labels = label_assistant_turns(torch.tensor(ids), processor.tokenizer)
        visual = self.shared["visual_tokens"]
        return {"ok": True, **self.shared, "text_tokens": len(ids) - visual,
                "label_tokens": int((labels[1:] != IGNORE_INDEX).sum()), "total_tokens": len(ids), "shrunk": None}


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
    return _sizes(sample, _seconds(record, settings))


def work(task: tuple) -> Iterator:
    """One task of the check's pool: ("keys", start, stop) yields one (start, digests) item; ("measure",
    numbers) yields (number, result) per record, in order (a result is `measure`'s, or a TaskFailure)."""
    if task[0] == "keys":
        _, start, stop = task
        yield start, _keys(start, stop)
    else:
        yield from _measure_shared(task[1])


def _keys(start: int, stop: int) -> bytes:
    """The 4 digests (content, cache, media, id: 16 bytes each) of records start..stop-1, one row a record."""
    records, settings = _STATE["records"], _STATE["settings"]
    dumped = settings.model_dump(mode="json")
    rows = bytearray()
    for number in range(start, stop):
        rows += record_digests(records[number], dumped, _STATE["max_length"], _STATE["fingerprint"],
                               _STATE["identities"])
    if len(_STATE["identities"]) > 100_000:  # a data set of a million images: keep this bounded
        _STATE["identities"].clear()
    return bytes(rows)


def _measure_shared(numbers: Sequence[int]) -> Iterator[tuple[int, Any]]:
    """Records that share their media, the media decoded once (see the module's docstring)."""
    import traceback

    from vidlab.inputs import encode, load_media
    from vidlab.models.template import video_compressor_of

    records, settings, max_length = _STATE["records"], _STATE["settings"], _STATE["max_length"]
    shared = _STATE["shared"]
    processor = shared or _STATE["processor"]
    if shared is not None:
        processor.video_processor.forget()
    # From text alone only where the processor's own call decides the sizes (no compressor's layout).
    text_only: _TextOnly | None | bool = None if shared is not None and video_compressor_of(shared) is None else False
    first = records[int(numbers[0])]
    media, failure = None, None
    try:
        media = load_media(first.conversation, processor, settings, data_root=first.data_root)
    except _decoder_errors() as err:  # as encode_record words it, for each record of the group
        failure = err
    duration: list = []
    for number in numbers:
        record = first if number == numbers[0] else records[int(number)]
        try:
            result = _from_text(text_only, record, processor, max_length) if text_only else None
            if result is not None:
                yield int(number), result
                continue
            if text_only is None:
                processor.get_text_with_replacements.arm()
                processor.tokenizer.arm()
            if failure is not None:
                reason = str(failure) if isinstance(failure, MediaError) else (
                    f"the media could not be decoded ({type(failure).__name__}: {failure}). Check the file or "
                    "re-encode it"
                )
                err = SampleError(f"{record.source}: {reason}")
                err.__cause__ = failure
                raise err
            sample = encode(record.conversation, media, processor, settings, labels=True, max_length=max_length)
            if not duration:
                duration.append(_seconds(record, settings))
            result = _sizes(sample, duration[0])
            if text_only is None and result["shrunk"] is None:
                # Sizes from text alone are used only once they equal this record's, encoded in full.
                found = _TextOnly.of(processor, result)
                text_only = found if found is not None and _from_text(found, record, processor, max_length) == result \
                    else False
        except SampleError as err:
            result = {"ok": False, "kind": kind_of(err), "reason": reason_of(err, record.source)}
        except Exception as err:  # noqa: BLE001 - one record's bug fails that record, as the pool would
            result = TaskFailure("error", f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=6)}")
        yield int(number), result


def _from_text(text_only: _TextOnly, record: TrainRecord, processor, max_length: int | None) -> dict | None:
    """`_TextOnly.measure`, or None (encode in full) where the processor lacks what it uses."""
    try:
        return text_only.measure(record, processor, max_length)
    except (AttributeError, TypeError, ValueError, IndexError, KeyError):
        return None


def _sizes(sample, duration: float | None) -> dict:
    stats = sample.stats
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
