"""The kinds of bad record (`vidlab data check`, training's skipped.jsonl), and which kind an error is.

Errors about the record itself (`vidlab.errors.RecordError`: not JSON, fields, placeholders, turns)
carry their kind; media and budget errors are sorted by their type. No kind is read from a message.
"""

from __future__ import annotations

from vidlab.errors import (
    ClipWindowError,
    MediaError,
    MediaNotFoundError,
    NoFramesError,
    NoVideoStreamError,
    OverBudgetError,
    RecordError,
    SampleError,
    TruncatedVideoError,
    UnreadableMediaError,
)

KINDS = {
    "not json": "the line is not valid JSON",
    "wrong field types": "a field has the wrong type or shape (video/image not paths, value not a string, ...)",
    "wrong placeholders": "<video>/<image> placeholders do not match the record's videos/images",
    "empty conversation": "the record has no turns",
    "empty turns": "a turn has no text and no media",
    "bad turns": "roles out of order, unknown roles, a system turn not first, media outside user turns",
    "no answer": "no gpt turn, so nothing to learn",
    "clip window": "start/end not usable (end before start, or outside the video)",
    "missing": "a video or image file does not exist",
    "undecodable": "a file FFmpeg or PIL cannot read, or a video without frames",
    "truncated": "a cut download: the readable frames end well before the length its header states",
    "unusable media": "the processor refuses the media (e.g. an aspect ratio above 200)",
    "over budget": "does not fit model_max_length even at one frame per video",
    "timeout": "decoding ran past the time limit (its worker was stopped)",
    "crashed": "the decoding process died (e.g. a decoder crash)",
    "duplicate": "the same conversation and media as an earlier record",
    "error": "vidlab raised an unexpected error (a bug: please report it)",
    "invalid record": "does not validate for another reason",
}



def kind_of(err: BaseException) -> str:
    """What kind of bad record an error says, from its type (and the errors it was raised from)."""
    chain = []
    while err is not None:
        chain.append(err)
        err = err.__cause__
    for error in chain:
        if isinstance(error, RecordError):
            return error.kind
    for kind, types in (("missing", MediaNotFoundError), ("truncated", TruncatedVideoError),
                        ("clip window", ClipWindowError), ("over budget", OverBudgetError),
                        ("undecodable", (UnreadableMediaError, NoVideoStreamError, NoFramesError))):
        if any(isinstance(e, types) for e in chain):
            return kind
    if any(isinstance(e, MediaError) for e in chain[1:]):
        return "unusable media"
    if isinstance(chain[0], SampleError):
        return "undecodable"  # encode_record wraps decoder errors (FFmpeg, OSError, ...) as "could not be decoded"
    return "invalid record"
