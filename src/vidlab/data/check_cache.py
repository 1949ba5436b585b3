"""What the check already measured, so that a rerun on a large set decodes only what changed.

Each finished record is appended to OUT/cache.jsonl under a key made of what decides its result:
the conversation (not its place in the file), each media file's identity (resolved path, size,
modification time), the media settings, model_max_length and the processor's files. Edit a record,
touch a video or change a setting, and that record is checked again; timeouts and crashes are never
cached (the next run tries them again). A killed check keeps every line it finished.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from vidlab.files import LineAppender, read_jsonl
from vidlab.settings import MediaSettings
from vidlab.training.data import TrainRecord

CACHE_FILE = "cache.jsonl"
_PROCESSOR_SUFFIXES = (".json", ".jinja", ".txt", ".model")


def processor_fingerprint(model: str) -> str:
    """A hash of the model folder's processor and tokenizer files (for a hub id: the id)."""
    folder = Path(model).expanduser()
    digest = hashlib.sha256()
    if not folder.is_dir():
        digest.update(model.encode())
        return digest.hexdigest()
    for path in sorted(folder.iterdir()):
        if path.suffix in _PROCESSOR_SUFFIXES and path.is_file() and "index" not in path.name:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def media_identity(record: TrainRecord) -> list:
    identity = []
    for part in record.conversation.media:
        path = Path(part.path).expanduser()
        path = (path if path.is_absolute() else record.data_root / path).resolve()
        try:
            stat = os.stat(path)
            identity.append([str(path), stat.st_size, stat.st_mtime_ns, part.start, part.end])
        except OSError:
            identity.append([str(path), None, None, part.start, part.end])
    return identity


def content_key(record: TrainRecord) -> str:
    """The record's conversation and media, without its id and place (for finding duplicates)."""
    turns = record.conversation.model_dump(mode="json", exclude={"id", "source"})
    return json.dumps([turns, media_identity(record)], sort_keys=True)


def cache_key(record: TrainRecord, settings: MediaSettings, max_length: int, fingerprint: str) -> str:
    payload = json.dumps([content_key(record), settings.model_dump(mode="json"), max_length, fingerprint],
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class CheckCache:
    """Results by key, read from OUT/cache.jsonl and appended to it as records finish."""

    def __init__(self, folder: Path, enabled: bool = True):
        self.path = folder / CACHE_FILE
        self.enabled = enabled
        self.results: dict[str, dict] = {}
        if enabled and self.path.is_file():
            for row in read_jsonl(self.path, torn_tail_ok=True):
                if isinstance(row.get("key"), str) and isinstance(row.get("result"), dict):
                    self.results[row["key"]] = row["result"]
        self._appender: LineAppender | None = None

    def get(self, key: str) -> dict | None:
        return self.results.get(key) if self.enabled else None

    def put(self, key: str, result: dict) -> None:
        if not self.enabled or result.get("kind") in ("timeout", "crashed", "error"):
            return
        if self._appender is None:
            self._appender = LineAppender(self.path)
        self._appender.write({"key": key, "result": result})
        self.results[key] = result

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
