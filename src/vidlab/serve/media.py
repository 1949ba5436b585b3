"""A request's image and video parts (`MediaRef`s) -> files, within the server's limits; decoding is
`vidlab.inputs.MediaLoad`'s, as for every command.

What the server adds: a URL, a data: URL (upload) or a path under the media root becomes a file;
uploads and downloads are written to the server's temporary folder only while they are decoded,
and are named in the shared `MediaCache` by the client's `uuid` or their content hash (a file by
its identity). A part that gives only its `uuid` (no url) is answered from that cache, so a client
resends a video by id without uploading it again. A part that gives a url and a uuid is read and
hashed: the uuid names the bytes it came with last, so a client reusing another's uuid gets its own
media (unless the operator trusts uuids: `trust_media_uuids`).

Before a video is decoded its header (duration, frame rate) is read and the request's `RequestTally`
admits it: the fps is brought down to the file's own rate (more costs the same frames), then the
server's ceilings on fps, frames and seconds per request apply.
"""

from __future__ import annotations

import hashlib
import math
import uuid as uuid_module
from dataclasses import dataclass, field
from pathlib import Path

from vidlab.bounded_cache import BoundedCache
from vidlab.conversation import MediaPart
from vidlab.errors import MediaError, VidlabError
from vidlab.inputs import LoadedMedia, MediaLoad
from vidlab.media import VideoClip
from vidlab.media.cache import MediaCache, file_identity
from vidlab.serve import sources
from vidlab.serve.errors import ServeError, client_text, from_user_error
from vidlab.serve.messages import MediaRef
from vidlab.serve.options import ServeOptions
from vidlab.settings import MediaSettings

_SUFFIXES = {
    "video/mp4": ".mp4", "video/webm": ".webm", "video/x-matroska": ".mkv", "video/quicktime": ".mov",
    "video/x-msvideo": ".avi", "video/avi": ".avi", "image/gif": ".gif", "image/png": ".png", "image/jpeg": ".jpg",
    "image/jpg": ".jpg", "image/webp": ".webp", "image/bmp": ".bmp",
}
_UUIDS = 4096  # uuid -> what it named, remembered so that a uuid alone finds the media again
_PROBES = 4096  # content hash -> its header's duration and rate, so a cached upload is not written out again


@dataclass(frozen=True)
class Probe:
    """What a video's header says, read before decoding: seconds and frames per second (None: unknown)."""

    seconds: float | None
    rate: float | None


@dataclass(frozen=True)
class Known:
    """What a uuid named when it was last sent with a url: a content hash or a media-root file, and its header."""

    name: tuple
    probe: Probe | None


@dataclass
class Loaded:
    """A decoded part and how it was obtained."""

    media: LoadedMedia
    source: str  # where the bytes came from: file, upload, remote; cache: the part gave only its uuid
    cached: bool  # decoded before: taken from the cache
    warnings: list[str] = field(default_factory=list)

    def info(self) -> dict:
        return {"source": self.source, "cached": self.cached}


class RequestTally:
    """One request's video so far, against the server's ceilings (frames, seconds, fps)."""

    def __init__(self, options: ServeOptions):
        self.options = options
        self.frames = 0
        self.seconds = 0.0

    def admit(self, ref: MediaRef, settings: MediaSettings, probe: Probe) -> MediaSettings:
        """The settings this video is decoded with (fps at most the file's own rate), once it is counted.

        Raises:
            ServeError: 400 (fps, frames) or 413 (seconds) naming the server's limit.
        """
        options = self.options
        window = _window(ref, probe.seconds)
        if window is not None:
            self.seconds += window
            if self.seconds > options.max_request_video_seconds:
                raise ServeError(413, f"{ref.param}: the request's videos run {self.seconds:.1f} s together, over the "
                                 f"server's limit of {options.max_request_video_seconds:g} s per request "
                                 "(max_request_video_seconds). Send shorter videos or clip windows (start/end).",
                                 code="video_seconds_over_limit", param=ref.param)
        if settings.num_frames is None:
            fps = settings.fps
            if probe.rate is not None and fps > probe.rate:
                fps = probe.rate  # frames beyond the file's own rate repeat it: the same picture for nothing
            if fps > options.max_fps:
                raise ServeError(400, f"{ref.param}: {fps:g} frames per second of video is over the server's limit "
                                 f"of {options.max_fps:g} (max_fps). Ask for a lower fps.", code="fps_over_limit",
                                 param="mm_processor_kwargs.fps")
            if fps != settings.fps:
                settings = settings.model_copy(update={"fps": fps})
            expected = settings.max_frames if window is None else \
                min(settings.max_frames, max(settings.min_frames, math.ceil(window * fps) + 1))
        else:
            expected = settings.num_frames
        self.frames += expected
        if self.frames > options.max_request_frames:
            raise ServeError(400, f"{ref.param}: the request's videos would take {self.frames} frames together, over "
                             f"the server's limit of {options.max_request_frames} per request (max_request_frames). "
                             "Ask for fewer frames (num_frames, max_frames, fps) or send fewer videos.",
                             code="too_many_frames", param=ref.param)
        return settings


def _window(ref: MediaRef, seconds: float | None) -> float | None:
    """Seconds of the video the part uses (its clip window), None when unknown."""
    if seconds is None:
        return None if ref.end is None else max(0.0, ref.end - (ref.start or 0.0))
    end = seconds if ref.end is None else min(ref.end, seconds)
    return max(0.0, end - (ref.start or 0.0))


def probe_video(path: Path, folder_fps: float) -> Probe:
    """Duration and frame rate from a video's header (a folder of frames: its count at `folder_fps`)."""
    if path.is_dir():
        return Probe(sum(1 for _ in path.iterdir()) / folder_fps, folder_fps)
    from vidlab.media.table import open_video, video_stream

    with open_video(path) as container:
        stream = video_stream(container, path)
        seconds = None
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if path.suffix.lower() == ".gif":
        rate = None  # a gif's frames are indexed at a fixed rate, whatever its header says
    return Probe(seconds, float(rate) if rate else None)


class MediaResolver:
    """Resolves request media to files and decodes them through `MediaLoad` (with the server's shared
    `MediaCache`); one per server, used from worker threads."""

    def __init__(self, options: ServeOptions, temp_dir: Path, processor=None, cache: MediaCache | None = None):
        self.options = options
        self.temp_dir = temp_dir
        self.processor = processor
        self.cache = cache
        self._uuids: BoundedCache[Known] = BoundedCache(_UUIDS, lambda known: 1)
        self._probes: BoundedCache[Probe] = BoundedCache(_PROBES, lambda probe: 1)

    def needs_download(self, ref: MediaRef, settings: MediaSettings) -> bool:
        """Whether the part's bytes must be downloaded (a remote url not answered from the cache by its uuid)."""
        if ref.url is None or not sources.is_remote(ref.url):
            return False
        known = self._uuids.get(ref.uuid) if self.options.trust_media_uuids and ref.uuid is not None else None
        if known is None or known.name[0] != "sha256":
            return True
        if ref.kind == "image":
            return self.cache is None or self.cache.images.get(known.name) is None
        try:
            admitted = RequestTally(self.options).admit(ref, settings, known.probe or Probe(None, None))
        except ServeError:  # over a limit: the request is refused when it is prepared
            return True
        return self._settings_load(admitted).find(self._part(ref, ref.label), known.name) is None

    def load(self, ref: MediaRef, settings: MediaSettings, tally: RequestTally,
             fetched: tuple[bytes, str] | None = None) -> Loaded:
        """The part's image or clip, decoded with the request's `settings` (and the server's processor and cache),
        counted in `tally`. A remote part's bytes are `fetched` (downloaded by the caller, on the event loop).

        Raises:
            ServeError: naming the part (bad URL, outside the media root, too large or long, not decodable,
                an unknown uuid, over a limit of the request).
        """
        path = None
        try:
            if ref.url is None:
                return self._by_uuid(ref, settings, tally, "cache")
            if sources.is_data_url(ref.url) or sources.is_remote(ref.url):
                source = "upload" if sources.is_data_url(ref.url) else "remote"
                if self.options.trust_media_uuids and ref.uuid is not None and fetched is None:
                    found = self._by_uuid(ref, settings, tally, source, missing_ok=True)
                    if found is not None:
                        return found
                if source == "upload":
                    data, media_type = sources.read_data_url(ref.url, self.options.max_media_bytes, ref.param)
                elif fetched is not None:
                    data, media_type = fetched
                    media_type = media_type or _type_of(ref.url)
                else:
                    raise ServeError(400, f"{ref.param}: the media was not downloaded. Send it again.",
                                     code="remote_media_failed", param=ref.param)
                return self._from_bytes(ref, data, media_type, source, settings, tally)
            path = sources.local_path(ref.url, self.options, ref.param)
            loaded = self._from_file(ref, path, settings, tally)
            if ref.uuid is not None:
                probe = self._probes.get(("file", path))
                self._uuids.put(ref.uuid, Known(("file", path), probe))
            return loaded
        except ServeError:
            raise
        except VidlabError as err:
            raise from_user_error(type(err)(self._for_client(str(err), ref, path)), ref.param, ref.param) from None

    def _for_client(self, message: str, ref: MediaRef, path: Path | None) -> str:
        """A library error's message without the server's own paths (the part is named instead)."""
        if path is not None:
            message = message.replace(str(path), ref.label)
        if self.options.media_root is not None:
            root = str(Path(self.options.media_root).resolve())
            message = message.replace(root + "/", "").replace(root, "the media root")
        return client_text(message.replace(str(self.temp_dir), "the media"))

    def _settings_load(self, settings: MediaSettings) -> MediaLoad:
        return MediaLoad(self.processor, settings, cache=self.cache)

    @staticmethod
    def _part(ref: MediaRef, path: Path | str) -> MediaPart:
        return MediaPart(type=ref.kind, path=str(path), start=ref.start, end=ref.end)

    def _by_uuid(self, ref: MediaRef, settings: MediaSettings, tally: RequestTally, source: str,
                 missing_ok: bool = False) -> Loaded | None:
        known = self._uuids.get(ref.uuid)
        if known is not None and known.name[0] == "file":
            path = known.name[1]
            if path.exists():
                loaded = self._from_file(ref, path, settings, tally)
                loaded.source = source
                return loaded
        elif known is not None:
            if ref.kind == "image":
                found = self.cache.images.get(known.name) if self.cache is not None else None
            else:
                load = self._settings_load(tally.admit(ref, settings, known.probe or Probe(None, None)))
                found = load.find(self._part(ref, ref.label), known.name)
                if found is not None:
                    self._check_clip(ref, found)  # a limit holds for the cached copy too
            if found is not None:
                return Loaded(found, source, True)
        if missing_ok:
            return None
        raise ServeError(
            400, f"{ref.where}: uuid {ref.uuid!r} is not in the server's cache (never sent, forgotten, or sent with "
            "other frame settings). Send the part's url again with this uuid.", code="uuid_not_cached",
            param=f"{ref.where}.uuid",
        )

    def _from_file(self, ref: MediaRef, path: Path, settings: MediaSettings, tally: RequestTally) -> Loaded:
        if ref.kind == "image":
            return Loaded(self._settings_load(settings)(self._part(ref, path)), "file", False)
        probe = probe_video(path, settings.folder_fps)
        self._probes.put(("file", path), probe)
        self._refuse_long(ref, probe.seconds)
        load = self._settings_load(tally.admit(ref, settings, probe))
        part = self._part(ref, path)
        hit = not path.is_dir() and load.find(part, ("file", *file_identity(path))) is not None
        clip = load(part)
        self._check_clip(ref, clip)
        return Loaded(clip, "file", hit, list(clip.warnings))

    def _from_bytes(self, ref: MediaRef, data: bytes, media_type: str, source: str, settings: MediaSettings,
                    tally: RequestTally) -> Loaded:
        digest = hashlib.sha256(data).hexdigest()
        name = ("sha256", digest)
        probe = self._probes.get(name) if ref.kind == "video" else None
        if ref.uuid is not None:
            self._uuids.put(ref.uuid, Known(name, probe))
        if ref.kind == "image" and self.cache is not None and (found := self.cache.images.get(name)) is not None:
            return Loaded(found, source, True)
        admitted = None
        if probe is not None:  # decoded before: the header is known, the frames may be cached
            admitted = tally.admit(ref, settings, probe)
            found = self._settings_load(admitted).find(self._part(ref, ref.label), name)
            if found is not None:
                self._check_clip(ref, found)
                return Loaded(found, source, True)
        suffix = ".gif" if data[:4] == b"GIF8" else _SUFFIXES.get(media_type, ".bin")
        path = self.temp_dir / f"{digest[:16]}-{uuid_module.uuid4().hex[:8]}{suffix}"
        try:
            path.write_bytes(data)
            del data
            if ref.kind == "image":
                return Loaded(self._settings_load(settings)(self._part(ref, path), name), source, False)
            if probe is None:
                probe = probe_video(path, settings.folder_fps)
                self._probes.put(name, probe)
                if ref.uuid is not None:
                    self._uuids.put(ref.uuid, Known(name, probe))
            self._refuse_long(ref, probe.seconds)
            if admitted is None:
                admitted = tally.admit(ref, settings, probe)
            clip = self._settings_load(admitted)(self._part(ref, path), name)
            self._check_clip(ref, clip)
            # The temporary file's name means nothing to the client (the clip is kept under the upload's name).
            clip.path = ref.label
            clip.warnings = [w.replace(str(path), ref.label) for w in clip.warnings]
            return Loaded(clip, source, False, list(clip.warnings))
        except MediaError as err:
            # The temporary file's name means nothing to the client: name the part instead.
            raise from_user_error(type(err)(self._for_client(str(err), ref, path)), ref.param, ref.param) from None
        finally:
            path.unlink(missing_ok=True)

    def _check_clip(self, ref: MediaRef, clip: VideoClip) -> None:
        if self.options.max_video_seconds is not None:
            self._refuse_long(ref, clip.duration)

    def _refuse_long(self, ref: MediaRef, seconds: float | None) -> None:
        limit = self.options.max_video_seconds
        if limit is not None and seconds is not None and seconds > limit:
            raise ServeError(413, f"{ref.param}: the video is {seconds:.1f} s long, over the server's limit of "
                             f"{limit:g} s (max_video_seconds). Send a shorter video.",
                             code="video_too_long", param=ref.param)


def _type_of(url: str) -> str:
    suffix = Path(url.split("?", 1)[0]).suffix.lower()
    return next((kind for kind, known in _SUFFIXES.items() if known == suffix), "")
