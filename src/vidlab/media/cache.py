"""Decoded media kept by what made them, so the same video is never decoded twice for the same settings.

A clip's key is what names its content, the file's identity by default (its resolved path, size and
modification time: an edited file is a new file) or a name the caller brings (the server names
uploads by content hash or by the client's uuid), with every setting that changes the frames
(sampling, clip window, frame size). Images are kept only under a caller's name (a file's image is
quick to decode again). Both are `BoundedCache`s: bounded by the bytes of their pixels, least
recently used forgotten first, thread-safe (evaluation and the server decode in worker threads).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from pathlib import Path

from PIL import Image

from vidlab.bounded_cache import BoundedCache
from vidlab.media.clip import VideoClip, require_exists
from vidlab.settings import Sampling

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB of frames
DEFAULT_IMAGE_BYTES = 256 << 20  # decoded images kept under a name (an upload's uuid or content hash)

FrameSizeRule = Callable[[int, int, int], tuple[int, int]]


def file_identity(path: str | Path) -> tuple[str, int, int]:
    """(resolved path, size, modification time in ns): changes whenever the file's content may have."""
    path = require_exists(path).resolve()
    stat = os.stat(path)
    return str(path), stat.st_size, stat.st_mtime_ns


def clip_size(clip: VideoClip) -> int:
    return int(clip.frames.nbytes)


def image_size(image: Image.Image) -> int:
    return image.width * image.height * len(image.getbands())


class ClipCache(BoundedCache[VideoClip]):
    """Decoded clips, at most `max_bytes` of frames in all; a clip larger than that is not kept."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        super().__init__(max_bytes, clip_size)

    def put(self, key: Hashable, clip: VideoClip) -> VideoClip:
        """Keep `clip` under `key` (it gets the key as `clip.key`: vision features are cached by it); returns it."""
        clip.key = key
        return super().put(key, clip)

    @staticmethod
    def key(name: tuple, sampling: Sampling, start: float | None, end: float | None,
            frame_size: FrameSizeRule | None) -> tuple:
        """The key of the frames these settings take from the content `name` names."""
        return (*name, sampling, start, end, frame_size)

    def load(
        self,
        path: str | Path,
        sampling: Sampling = Sampling(),
        start: float | None = None,
        end: float | None = None,
        frame_size: FrameSizeRule | None = None,
        name: tuple | None = None,
    ) -> VideoClip:
        """`vidlab.media.load_video`, from the cache when this content was decoded with these settings.

        `name` names the content (default: the file's identity). `frame_size` must be hashable (equal
        sizers give equal keys), e.g. `vidlab.inputs.FrameSizer`.
        """
        from vidlab.media import load_video

        key = self.key(name or ("file", *file_identity(path)), sampling, start, end, frame_size)
        clip = self.get(key)
        if clip is None:
            clip = self.put(key, load_video(path, sampling, start, end, frame_size))
        return clip


class MediaCache:
    """Decoded clips (`clips`) and named images (`images`) kept between loads: one per chat, page or server.

    Args:
        clip_bytes: the frames' total size the clip cache may hold.
        image_bytes: the pixels' total size the image cache may hold.
    """

    def __init__(self, clip_bytes: int = DEFAULT_MAX_BYTES, image_bytes: int = DEFAULT_IMAGE_BYTES):
        self.clips = ClipCache(clip_bytes)
        self.images: BoundedCache[Image.Image] = BoundedCache(image_bytes, image_size)

    def clear(self) -> None:
        self.clips.clear()
        self.images.clear()
