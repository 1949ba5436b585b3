"""The kinds of bad record `vidlab data check` reports, and which kind a training skip note is.

`vidlab.training.data.load_records` gives each record it skips a reason in words (the same words
training writes to skipped.jsonl); the check sorts those reasons into kinds by the phrases
`vidlab.conversation` and `vidlab.files` use. Failures while decoding and encoding are sorted by
their error types instead (`check_sample.error_kind`).
"""

from __future__ import annotations

KINDS = {
    "not json": "the line is not valid JSON",
    "wrong field types": "a field has the wrong type or shape (video/image not paths, value not a string, ...)",
    "wrong placeholders": "<video>/<image> placeholders do not match the record's videos/images",
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

# Phrases of the skip reasons, in the order they are tried (the first match decides).
_PHRASES = (
    ("not json", ("not valid JSON",)),
    ("missing", (" not found: ",)),
    ("wrong placeholders", ("placeholder",)),
    ("empty turns", ("is empty. Give it text",)),
    ("no answer", ("no assistant",)),
    ("clip window", ('must be after "start"',)),
    ("wrong field types", ("must be a path or a list", "must be a number", "must be a string", "must be a JSON object",
                           "must be an object with", 'no "conversations" list')),
    ("bad turns", ("was expected", "only the first turn may be", "holds media", "only a system turn", "has no turns",
                   "unknown role")),
)


def skip_kind(reason: str) -> str:
    """The kind of a load_records skip reason."""
    for kind, phrases in _PHRASES:
        if any(phrase in reason for phrase in phrases):
            return kind
    return "invalid record"
