"""A conversation's media parts -> decoded clips and images: the one road every command takes into media.

Records (evaluation, training, validation), chat, the web page and the server all decode through
`load_media` or the `MediaLoad` it is made of (chat mixes parts it must decode with clips and images
given decoded; the server looks a part up by name before fetching its bytes), so the same media with
the same settings become the same frames, at the size the processor uses, wherever they come from.
Whether a cut file is used is the caller's `allow_partial`: chat decides it for interactive use
(`vidlab.chat.INTERACTIVE_ALLOW_PARTIAL`), the rest follow the settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from PIL import Image

from vidlab.conversation import Conversation, MediaPart
from vidlab.inputs.processing import video_frame_size
from vidlab.media import VideoClip, load_image, load_video
from vidlab.media.cache import MediaCache
from vidlab.media.subtitles import read_subtitles
from vidlab.settings import MediaSettings

LoadedMedia = VideoClip | Image.Image


class MediaLoad:
    """One load's choices, made once: the frames `settings` sample, the size the processor will bring
    them to (`video_frame_size`), where relative paths start, and the cache.

    Args:
        processor: the model's processor (frames are decoded straight to its size); None keeps them full size.
        settings: sampling (fps, frame counts, clip rule...) and the visual-token budget that sizes frames.
        data_root: where relative paths start (None: the working folder).
        cache: decoded media kept between loads (None: decode every time).
        allow_partial: use a cut file with a warning (True) or refuse it (False); None: as `settings` say.
    """

    def __init__(self, processor=None, settings: MediaSettings = MediaSettings(), *,
                 data_root: str | Path | None = None, cache: MediaCache | None = None,
                 allow_partial: bool | None = None):
        sampling = settings.sampling()
        if allow_partial is not None:
            sampling = sampling.model_copy(update={"allow_partial": allow_partial})
        self.sampling = sampling
        self.frame_size = video_frame_size(processor, settings) if processor is not None else None
        self.data_root = data_root
        self.cache = cache

    def path(self, part: MediaPart) -> Path:
        path = Path(part.path).expanduser()
        if self.data_root is not None and not path.is_absolute():
            path = Path(self.data_root) / path
        return path

    def find(self, part: MediaPart, name: tuple) -> LoadedMedia | None:
        """The part as decoded before under `name` (what names its content: an upload's hash, a client's
        uuid) with these settings, or None."""
        if self.cache is None:
            return None
        if part.type == "image":
            return self.cache.images.get(name)
        found = self.cache.clips.get(self.cache.clips.key(name, self.sampling, part.start, part.end, self.frame_size))
        return None if found is None else self._with_subtitles(part, found)

    def _with_subtitles(self, part: MediaPart, clip: LoadedMedia) -> LoadedMedia:
        """The clip with its subtitle cues when the part names a subtitle file: a copy, so that the cached clip
        itself stays without them."""
        if part.type != "video" or part.subtitles is None:
            return clip
        return replace(clip, subtitles=read_subtitles(self.path(MediaPart(type="video", path=part.subtitles))))

    def __call__(self, part: MediaPart, name: tuple | None = None) -> LoadedMedia:
        """The part decoded (from the cache when it holds it). `name` names the content when its file does
        not (a temporary copy of an upload); by default the file's identity does."""
        return self._with_subtitles(part, self._decoded(part, name))

    def _decoded(self, part: MediaPart, name: tuple | None) -> LoadedMedia:
        path = self.path(part)
        if part.type == "image":
            if name is None or self.cache is None:
                return load_image(path)
            found = self.cache.images.get(name)
            return found if found is not None else self.cache.images.put(name, load_image(path))
        if self.cache is None:
            return load_video(path, self.sampling, part.start, part.end, self.frame_size)
        return self.cache.clips.load(path, self.sampling, part.start, part.end, self.frame_size, name)


def load_media(
    parts: Conversation | Sequence[MediaPart],
    processor=None,
    settings: MediaSettings = MediaSettings(),
    *,
    data_root: str | Path | None = None,
    cache: MediaCache | None = None,
    allow_partial: bool | None = None,
) -> list[LoadedMedia]:
    """Decode every video and image part (of a conversation, or as listed), in order.

    Args:
        parts: a conversation (its media parts) or media parts.
        processor, settings, data_root, cache, allow_partial: as in `MediaLoad`.
    """
    parts = parts.media if isinstance(parts, Conversation) else list(parts)
    load = MediaLoad(processor, settings, data_root=data_root, cache=cache, allow_partial=allow_partial)
    return [load(part) for part in parts]
