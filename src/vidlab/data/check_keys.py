"""What names a record for the check: its content (for duplicates), its cache key, its media (for sharing
one decode), its id; each kept as a 16-byte digest, so a million records take 64 MB, not their text.

The content is the conversation and each media file's identity (resolved path, size, modification
time, clip window), without the record's id and place. The cache key adds what else decides the
result: the media settings, model_max_length and the processor's files. The media key is what
`load_media` decodes: each part's type, path (as the decoder opens it, and resolved with its identity)
and clip window; records with equal media keys decode to the same frames.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from vidlab.settings import MediaSettings
from vidlab.training.data import TrainRecord

DIGEST_BYTES = 16
ROW_BYTES = 4 * DIGEST_BYTES  # content, cache, media, id


def _identity(path: Path, identities: dict | None) -> list:
    """[resolved path, size, modification time in ns] of a media file ([path, None, None] when it is gone)."""
    known = identities.get(path) if identities is not None else None
    if known is not None:
        return known
    resolved = path.resolve()
    try:
        stat = os.stat(resolved)
        known = [str(resolved), stat.st_size, stat.st_mtime_ns]
    except OSError:
        known = [str(resolved), None, None]
    if identities is not None:
        identities[path] = known
    return known


def _opened(record: TrainRecord, part) -> Path:
    """The path the decoder opens for a part (as `vidlab.inputs.MediaLoad` joins it)."""
    path = Path(part.path).expanduser()
    return path if path.is_absolute() else record.data_root / path


def media_identity(record: TrainRecord, identities: dict | None = None) -> list:
    """Per media part: [resolved path, size, modification time, start, end]. `identities` remembers files
    already looked at (one run of the check: a million records often share a few hundred videos)."""
    return [[*_identity(_opened(record, part), identities), part.start, part.end] for part in record.conversation.media]


def content_key(record: TrainRecord, identities: dict | None = None) -> str:
    """The record's conversation and media, without its id and place (for finding duplicates)."""
    turns = record.conversation.model_dump(mode="json", exclude={"id", "source"})
    return json.dumps([turns, media_identity(record, identities)], sort_keys=True)


def _cache_payload(content: str, settings: dict, max_length: int, fingerprint: str) -> bytes:
    return json.dumps([content, settings, max_length, fingerprint], sort_keys=True).encode()


def cache_key(record: TrainRecord, settings: MediaSettings, max_length: int, fingerprint: str) -> str:
    """The record's cache key (hex): sha256 of its content, the settings, the token limit and the processor."""
    payload = _cache_payload(content_key(record), settings.model_dump(mode="json"), max_length, fingerprint)
    return hashlib.sha256(payload).hexdigest()


def record_digests(record: TrainRecord, settings: dict, max_length: int, fingerprint: str,
                   identities: dict | None = None) -> bytes:
    """content, cache key (the first 16 bytes of `cache_key`'s), media and id digests, 16 bytes each.
    `settings` is `MediaSettings.model_dump(mode="json")`, made once."""
    content = content_key(record, identities)
    cache = hashlib.sha256(_cache_payload(content, settings, max_length, fingerprint)).digest()[:DIGEST_BYTES]
    media = json.dumps([[part.type, str(_opened(record, part)), *_identity(_opened(record, part), identities),
                         part.start, part.end] for part in record.conversation.media])
    return (hashlib.blake2b(content.encode(), digest_size=DIGEST_BYTES).digest() + cache
            + hashlib.blake2b(media.encode(), digest_size=DIGEST_BYTES).digest()
            + hashlib.blake2b(record.id.encode(), digest_size=DIGEST_BYTES).digest())
