"""What the check already measured, so that a rerun on a large set decodes only what changed.

Each finished record is appended to OUT/cache.jsonl under a key made of what decides its result
(`vidlab.data.check_keys`): the conversation (not its place in the file), each media file's identity
(resolved path, size, modification time), the media settings, model_max_length and the processor's
files. Edit a record, touch a video or change a setting, and that record is checked again; timeouts
and crashes are never cached (the next run tries them again). A killed check keeps every line it
finished.

The file is not held in memory: opening the cache reads each line's key and notes where the line
is (24 bytes a line: a 16-byte digest and an offset); a result is read back from its line when a
record asks for it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from vidlab.data.check_keys import DIGEST_BYTES, cache_key, content_key, media_identity
from vidlab.files import LineAppender

CACHE_FILE = "cache.jsonl"
_PROCESSOR_SUFFIXES = (".json", ".jinja", ".txt", ".model")
_KEY_START = b'{"key": "'
_NOT_CACHED = ("timeout", "crashed", "error")


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


def _line_key(line: bytes) -> bytes | None:
    """The digest of a cache line's key, or None for a line that is not one of ours (or was cut off)."""
    if line.startswith(_KEY_START):  # as `put` writes it: the key is read without parsing the result
        end = line.find(b'"', len(_KEY_START))
        text = line[len(_KEY_START):end].decode("ascii", "replace") if end > 0 else ""
        if not line.endswith(b"}\n"):
            return None
    else:
        try:
            row = json.loads(line)
        except ValueError:
            return None
        text = row.get("key") if isinstance(row, dict) and isinstance(row.get("result"), dict) else None
        if not isinstance(text, str):
            return None
    try:
        digest = bytes.fromhex(text)[:DIGEST_BYTES]
    except ValueError:
        return None
    return digest if len(digest) == DIGEST_BYTES else None


class CheckCache:
    """Results by key digest, found in OUT/cache.jsonl and appended to it as records finish.

    Keys are 16-byte digests (the first 16 bytes of `cache_key`'s sha256; caches written with the whole
    hex key still match). The last line of a key wins.
    """

    def __init__(self, folder: Path, enabled: bool = True):
        self.path = folder / CACHE_FILE
        self.enabled = enabled
        self._appender: LineAppender | None = None
        self._handle: int | None = None
        digests, offsets = bytearray(), []
        if enabled and self.path.is_file():
            at = 0
            with open(self.path, "rb") as handle:
                for line in handle:
                    digest = _line_key(line)
                    if digest is not None:
                        digests += digest
                        offsets.append(at)
                    at += len(line)
        keys = np.frombuffer(bytes(digests), dtype=f"S{DIGEST_BYTES}")
        order = np.argsort(keys, kind="stable")
        keys, positions = keys[order], np.asarray(offsets, dtype=np.int64)[order]
        last = np.ones(len(keys), dtype=bool)  # of equal keys, the one written last
        last[:-1] = keys[1:] != keys[:-1]
        self.keys, self.offsets = keys[last], positions[last]

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, digests: np.ndarray) -> np.ndarray:
        """Per digest (an S16 array), the offset of its line in the file, or -1."""
        found = np.full(len(digests), -1, dtype=np.int64)
        if not self.enabled or not len(self.keys) or not len(digests):
            return found
        at = np.minimum(np.searchsorted(self.keys, digests), len(self.keys) - 1)
        hit = self.keys[at] == digests
        found[hit] = self.offsets[at[hit]]
        return found

    def result_at(self, offset: int) -> dict | None:
        """The result on the line at `offset` (None if the line cannot be read as one)."""
        if self._handle is None:
            self._handle = os.open(self.path, os.O_RDONLY)
        line = b""
        while not line.endswith(b"\n"):
            chunk = os.pread(self._handle, 1 << 16, offset + len(line))
            if not chunk:
                break
            end = chunk.find(b"\n")
            line += chunk if end < 0 else chunk[:end + 1]
        try:
            result = json.loads(line)["result"]
        except (ValueError, KeyError, TypeError):
            return None
        return result if isinstance(result, dict) else None

    def get(self, digest: bytes) -> dict | None:
        """The result cached under a 16-byte digest, or None."""
        offset = int(self.find(np.array([digest], dtype=f"S{DIGEST_BYTES}"))[0])
        return self.result_at(offset) if offset >= 0 else None

    def put(self, digest: bytes, result: dict) -> None:
        if not self.enabled or result.get("kind") in _NOT_CACHED:
            return
        if self._appender is None:
            self._appender = LineAppender(self.path)
        self._appender.write({"key": digest.hex(), "result": result})

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None


__all__ = ["CACHE_FILE", "CheckCache", "cache_key", "content_key", "media_identity", "processor_fingerprint"]
