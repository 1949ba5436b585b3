"""A request's image and video parts (`MediaRef`s) -> files, within the server's limits; decoding is
`vidlab.inputs.MediaLoad`'s, as for every command.

What the server adds: a URL, a data: URL (upload) or a path under the media root becomes a file;
uploads and downloads are written to the server's temporary folder only while they are decoded,
and are named in the shared `MediaCache` by the client's `uuid` or their content hash (a file by
its identity). A part that gives only its `uuid` (no url) is answered from that cache, so a client
resends a video by id without uploading it again. Videos longer than the server allows are refused.
"""

from __future__ import annotations

import hashlib
import uuid as uuid_module
from dataclasses import dataclass, field
from pathlib import Path

from vidlab.bounded_cache import BoundedCache
from vidlab.conversation import MediaPart
from vidlab.errors import MediaError, VidlabError
from vidlab.inputs import LoadedMedia, MediaLoad
from vidlab.media import VideoClip
from vidlab.serve import sources
from vidlab.serve.errors import ServeError, from_user_error
from vidlab.serve.messages import MediaRef
from vidlab.serve.options import ServeOptions

_SUFFIXES = {
    "video/mp4": ".mp4", "video/webm": ".webm", "video/x-matroska": ".mkv", "video/quicktime": ".mov",
    "video/x-msvideo": ".avi", "video/avi": ".avi", "image/gif": ".gif", "image/png": ".png", "image/jpeg": ".jpg",
    "image/jpg": ".jpg", "image/webp": ".webp", "image/bmp": ".bmp",
}
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


class MediaResolver:
    """Resolves request media to files and decodes them through `MediaLoad` (with the server's shared
    `MediaCache`); one per server, used from worker threads."""

    def __init__(self, options: ServeOptions, temp_dir: Path):
        self.options = options
        self.temp_dir = temp_dir
        self._uuid_files: BoundedCache[Path] = BoundedCache(_UUID_FILES, lambda path: 1)

    def load(self, ref: MediaRef, load: MediaLoad) -> Loaded:
        """The part's image or clip, decoded by `load` (the request's settings, processor and cache).

        Raises:
            ServeError: naming the part (bad URL, outside the media root, too large or long, not decodable,
                an unknown uuid).
        """
        try:
            if ref.url is None:
                return self._by_uuid(ref, load)
            if sources.is_data_url(ref.url) or sources.is_remote(ref.url):
                source = "upload" if sources.is_data_url(ref.url) else "remote"
                # The client's uuid names the content: a hit needs neither decoding the upload nor a download.
                found = self._cached(ref, self._name(ref, None), source, load)
                if found is not None:
                    return found
                if source == "upload":
                    data, media_type = sources.read_data_url(ref.url, self.options.max_media_bytes, ref.param)
                else:
                    data, media_type = sources.download(ref.url, self.options, ref.param)
                    media_type = media_type or _type_of(ref.url)
                return self._from_bytes(ref, data, media_type, source, load)
            path = sources.local_path(ref.url, self.options, ref.param)
            if ref.uuid is not None:
                self._uuid_files.put(ref.uuid, path)
            return self._from_file(ref, path, load)
        except ServeError:
            raise
        except VidlabError as err:
            raise from_user_error(err, ref.param, ref.param) from None

    @staticmethod
    def _name(ref: MediaRef, digest: str | None) -> tuple | None:
        """What names an upload's or a download's content in the cache: its uuid if given, else its hash."""
        if ref.uuid is not None:
            return ("uuid", ref.uuid)
        return None if digest is None else ("sha256", digest)

    @staticmethod
    def _part(ref: MediaRef, path: Path | str) -> MediaPart:
        return MediaPart(type=ref.kind, path=str(path), start=ref.start, end=ref.end)

    def _cached(self, ref: MediaRef, name: tuple | None, source: str, load: MediaLoad) -> Loaded | None:
        if name is None:
            return None
        found = load.find(self._part(ref, ref.label), name)
        if found is None:
            return None
        if isinstance(found, VideoClip):
            self._check_clip(ref, found)  # kept even if it was refused: a limit holds for the cached copy too
        return Loaded(found, source, True)

    def _by_uuid(self, ref: MediaRef, load: MediaLoad) -> Loaded:
        found = self._cached(ref, self._name(ref, None), "cache", load)
        if found is not None:
            return found
        path = self._uuid_files.get(ref.uuid)
        if path is not None and path.exists():
            loaded = self._from_file(ref, path, load)
            loaded.source = "cache"
            return loaded
        raise ServeError(
            400, f"{ref.where}: uuid {ref.uuid!r} is not in the server's cache (never sent, forgotten, or sent with "
            "other frame settings). Send the part's url again with this uuid.", code="uuid_not_cached",
            param=f"{ref.where}.uuid",
        )

    def _from_file(self, ref: MediaRef, path: Path, load: MediaLoad) -> Loaded:
        if ref.kind == "image":
            return Loaded(load(self._part(ref, path)), "file", False)
        self._check_duration(ref, path)
        clip = load(self._part(ref, path))
        self._check_clip(ref, clip)
        return Loaded(clip, "file", False, list(clip.warnings))

    def _from_bytes(self, ref: MediaRef, data: bytes, media_type: str, source: str, load: MediaLoad) -> Loaded:
        digest = hashlib.sha256(data).hexdigest()
        name = self._name(ref, digest)
        found = self._cached(ref, name, source, load)
        if found is not None:
            return found
        suffix = ".gif" if data[:4] == b"GIF8" else _SUFFIXES.get(media_type, ".bin")
        path = self.temp_dir / f"{digest[:16]}-{uuid_module.uuid4().hex[:8]}{suffix}"
        try:
            path.write_bytes(data)
            del data
            if ref.kind == "image":
                return Loaded(load(self._part(ref, path), name), source, False)
            self._check_duration(ref, path)
            clip = load(self._part(ref, path), name)
            self._check_clip(ref, clip)
            # The temporary file's name means nothing to the client (the clip is kept under the upload's name).
            clip.path = ref.label
            clip.warnings = [w.replace(str(path), ref.label) for w in clip.warnings]
            return Loaded(clip, source, False, list(clip.warnings))
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
