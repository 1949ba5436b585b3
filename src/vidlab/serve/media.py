"""A request's image and video parts (`MediaRef`s) -> decoded images and clips, through the shared caches.

Decoded clips are kept in the shared `ClipCache` under what identifies them and every setting that
changes the frames: a file's identity, an upload's content hash, or the client's `uuid`. A part
that gives only its `uuid` (no url) is answered from that cache, so a client resends a video by
id without uploading it again. Uploads and downloads are written to the server's temporary folder
only while they are decoded.
"""

from __future__ import annotations

import hashlib
import threading
import uuid as uuid_module
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from vidlab.errors import MediaError, VidlabError
from vidlab.inputs import FrameSizer, LoadedMedia
from vidlab.media import VideoClip, load_image, load_video
from vidlab.media.cache import ClipCache
from vidlab.serve import sources
from vidlab.serve.errors import ServeError, from_user_error
from vidlab.serve.messages import MediaRef
from vidlab.serve.options import ServeOptions
from vidlab.settings import MediaSettings

_SUFFIXES = {
    "video/mp4": ".mp4", "video/webm": ".webm", "video/x-matroska": ".mkv", "video/quicktime": ".mov",
    "video/x-msvideo": ".avi", "video/avi": ".avi", "image/gif": ".gif", "image/png": ".png", "image/jpeg": ".jpg",
    "image/jpg": ".jpg", "image/webp": ".webp", "image/bmp": ".bmp",
}
_IMAGE_CACHE_BYTES = 256 << 20  # decoded images kept for uuid / content-hash reuse
_UUID_FILES = 4096  # uuid -> media-root file, remembered so that a uuid alone finds the file again


@dataclass
class Loaded:
    """A decoded part and how it was obtained."""

    media: LoadedMedia
    source: str  # where the bytes came from: file, upload, remote; cache: the part gave only its uuid
    cached: bool  # decoded before: taken from the cache
    warnings: list[str] = field(default_factory=list)

    def info(self) -> dict:
        return {"source": self.source, "cached": self.cached}


class _ImageCache:
    """Least-recently-used decoded images by key (uuid or content hash), at most `max_bytes` of pixels."""

    def __init__(self, max_bytes: int = _IMAGE_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._images: OrderedDict[Hashable, Image.Image] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def _size(image: Image.Image) -> int:
        return image.width * image.height * len(image.getbands())

    def get(self, key: Hashable) -> Image.Image | None:
        with self._lock:
            image = self._images.get(key)
            if image is None:
                self.misses += 1
                return None
            self._images.move_to_end(key)
            self.hits += 1
            return image

    def put(self, key: Hashable, image: Image.Image) -> Image.Image:
        if self._size(image) > self.max_bytes:
            return image
        with self._lock:
            if key in self._images:
                self._bytes -= self._size(self._images.pop(key))
            self._images[key] = image
            self._bytes += self._size(image)
            while self._bytes > self.max_bytes:
                _, dropped = self._images.popitem(last=False)
                self._bytes -= self._size(dropped)
        return image


class MediaLoader:
    """Decodes request media through the shared caches; one per server, used from worker threads."""

    def __init__(self, options: ServeOptions, clip_cache: ClipCache, temp_dir: Path):
        self.options = options
        self.clip_cache = clip_cache
        self.images = _ImageCache()
        self.temp_dir = temp_dir
        self._uuid_files: OrderedDict[str, Path] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, ref: MediaRef, settings: MediaSettings, frame_size: FrameSizer | None) -> Loaded:
        """The part's image or clip.

        Raises:
            ServeError: naming the part (bad URL, outside the media root, too large or long, not decodable,
                an unknown uuid).
        """
        try:
            if ref.url is None:
                return self._by_uuid(ref, settings, frame_size)
            if sources.is_data_url(ref.url) or sources.is_remote(ref.url):
                source = "upload" if sources.is_data_url(ref.url) else "remote"
                # The client's uuid names the content: a hit needs neither decoding the upload nor a download.
                found = self._cached(ref, self._key(ref, None, settings, frame_size), source)
                if found is not None:
                    return found
                if source == "upload":
                    data, media_type = sources.read_data_url(ref.url, self.options.max_media_bytes, ref.param)
                else:
                    data, media_type = sources.download(ref.url, self.options, ref.param)
                    media_type = media_type or _type_of(ref.url)
                return self._from_bytes(ref, data, media_type, source, settings, frame_size)
            path = sources.local_path(ref.url, self.options, ref.param)
            if ref.uuid is not None:
                with self._lock:
                    self._uuid_files[ref.uuid] = path
                    self._uuid_files.move_to_end(ref.uuid)
                    while len(self._uuid_files) > _UUID_FILES:
                        self._uuid_files.popitem(last=False)
            return self._from_file(ref, path, settings, frame_size)
        except ServeError:
            raise
        except VidlabError as err:
            raise from_user_error(err, ref.param, ref.param) from None

    def _key(self, ref: MediaRef, digest: str | None, settings: MediaSettings, frame_size) -> tuple | None:
        """The cache key of an upload or download: its uuid if given, else its content hash."""
        if ref.uuid is not None:
            name = ("uuid", ref.uuid)
        elif digest is not None:
            name = ("sha256", digest)
        else:
            return None
        if ref.kind == "image":
            return name
        return (*name, settings.sampling(), ref.start, ref.end, frame_size)

    def _cached(self, ref: MediaRef, key: tuple | None, source: str) -> Loaded | None:
        if key is None:
            return None
        found = self.images.get(key) if ref.kind == "image" else self.clip_cache.get(key)
        return None if found is None else Loaded(found, source, True)

    def _by_uuid(self, ref: MediaRef, settings: MediaSettings, frame_size) -> Loaded:
        found = self._cached(ref, self._key(ref, None, settings, frame_size), "cache")
        if found is not None:
            return found
        with self._lock:
            path = self._uuid_files.get(ref.uuid)
        if path is not None and path.exists():
            loaded = self._from_file(ref, path, settings, frame_size)
            loaded.source = "cache"
            return loaded
        raise ServeError(
            400, f"{ref.where}: uuid {ref.uuid!r} is not in the server's cache (never sent, forgotten, or sent with "
            "other frame settings). Send the part's url again with this uuid.", code="uuid_not_cached",
            param=f"{ref.where}.uuid",
        )

    def _from_file(self, ref: MediaRef, path: Path, settings: MediaSettings, frame_size) -> Loaded:
        if ref.kind == "image":
            return Loaded(load_image(path), "file", False)
        self._check_duration(ref, path)
        clip = self.clip_cache.load(path, settings.sampling(), ref.start, ref.end, frame_size)
        self._check_clip(ref, clip)
        return Loaded(clip, "file", False, list(clip.warnings))

    def _from_bytes(self, ref: MediaRef, data: bytes, media_type: str, source: str, settings: MediaSettings,
                    frame_size) -> Loaded:
        digest = hashlib.sha256(data).hexdigest()
        key = self._key(ref, digest, settings, frame_size)
        found = self._cached(ref, key, source)
        if found is not None:
            return found
        suffix = ".gif" if data[:4] == b"GIF8" else _SUFFIXES.get(media_type, ".bin")
        path = self.temp_dir / f"{digest[:16]}-{uuid_module.uuid4().hex[:8]}{suffix}"
        try:
            path.write_bytes(data)
            del data
            if ref.kind == "image":
                return Loaded(self.images.put(key, load_image(path)), source, False)
            self._check_duration(ref, path)
            clip = load_video(path, settings.sampling(), ref.start, ref.end, frame_size)
            self._check_clip(ref, clip)
            clip.path = ref.label
            clip.warnings = [w.replace(str(path), ref.label) for w in clip.warnings]
            return Loaded(self.clip_cache.put(key, clip), source, False, list(clip.warnings))
        except MediaError as err:
            # The temporary file's name means nothing to the client: name the part instead.
            raise from_user_error(type(err)(str(err).replace(str(path), "the media")), ref.param, ref.param) from None
        finally:
            path.unlink(missing_ok=True)

    def _check_duration(self, ref: MediaRef, path: Path) -> None:
        """Refuse a video longer than the server allows before decoding it (its header's duration)."""
        limit = self.options.max_video_seconds
        if limit is None or path.is_dir():
            return
        from vidlab.media.table import open_video, video_stream

        with open_video(path) as container:
            stream = video_stream(container, path)
            seconds = None
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / 1_000_000
        if seconds is not None:
            self._refuse_long(ref, seconds)

    def _check_clip(self, ref: MediaRef, clip: VideoClip) -> None:
        if self.options.max_video_seconds is not None:
            self._refuse_long(ref, clip.duration)

    def _refuse_long(self, ref: MediaRef, seconds: float) -> None:
        limit = self.options.max_video_seconds
        if limit is not None and seconds > limit:
            raise ServeError(413, f"{ref.param}: the video is {seconds:.1f} s long, over the server's limit of "
                             f"{limit:g} s. Send a shorter video, or raise --max-video-seconds.",
                             code="video_too_long", param=ref.param)


def _type_of(url: str) -> str:
    suffix = Path(url.split("?", 1)[0]).suffix.lower()
    return next((kind for kind, known in _SUFFIXES.items() if known == suffix), "")
