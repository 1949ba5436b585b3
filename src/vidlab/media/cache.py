"""Decoded clips kept by what made them, so the same video is never decoded twice for the same settings.

A key is the file's identity (its resolved path, size and modification time: an edited file is
a new file) with every setting that changes the frames (sampling, clip window, frame size), or
any key a caller brings (the server keys uploads by content hash or by the client's uuid). The
cache is bounded by the bytes of the frames it holds and forgets the least recently used first.
Thread-safe: evaluation and the server decode in worker threads.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path

from vidlab.media.clip import VideoClip, require_exists
from vidlab.settings import Sampling

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB of frames


def file_identity(path: str | Path) -> tuple[str, int, int]:
    """(resolved path, size, modification time in ns): changes whenever the file's content may have."""
    path = require_exists(path).resolve()
    stat = os.stat(path)
    return str(path), stat.st_size, stat.st_mtime_ns


class ClipCache:
    """Least-recently-used decoded clips, at most `max_bytes` of frames in all.

    Args:
        max_bytes: the frames' total size the cache may hold; a clip larger than this is not kept.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 or more (got {max_bytes})")
        self.max_bytes = max_bytes
        self._clips: OrderedDict[Hashable, VideoClip] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._clips)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> VideoClip | None:
        with self._lock:
            clip = self._clips.get(key)
            if clip is None:
                self.misses += 1
                return None
            self._clips.move_to_end(key)
            self.hits += 1
            return clip

    def put(self, key: Hashable, clip: VideoClip) -> VideoClip:
        """Keep `clip` under `key` (it gets the key as `clip.key`); returns it."""
        clip.key = key
        size = clip.frames.nbytes
        if size > self.max_bytes:
            return clip
        with self._lock:
            if key in self._clips:
                self._bytes -= self._clips.pop(key).frames.nbytes
            self._clips[key] = clip
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._clips.popitem(last=False)
                self._bytes -= dropped.frames.nbytes
        return clip

    def load(
        self,
        path: str | Path,
        sampling: Sampling = Sampling(),
        start: float | None = None,
        end: float | None = None,
        frame_size: Callable[[int, int, int], tuple[int, int]] | None = None,
    ) -> VideoClip:
        """`vidlab.media.load_video`, from the cache when this file was decoded with these settings.

        `frame_size` must be hashable (equal sizers give equal keys), e.g. `vidlab.inputs.FrameSizer`.
        """
        from vidlab.media import load_video

        key = ("file", *file_identity(path), sampling, start, end, frame_size)
        clip = self.get(key)
        if clip is None:
            clip = self.put(key, load_video(path, sampling, start, end, frame_size))
        return clip
