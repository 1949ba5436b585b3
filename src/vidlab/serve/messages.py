"""OpenAI chat messages -> vidlab chat messages (for `parse_messages`) and the media parts to load, in order.

    {"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": "clip.mp4"}, "uuid": "clip-7", "start": 2, "end": 9},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},
        {"type": "text", "text": "What happens?"}]}

Nothing is read here: each image or video part becomes a `MediaRef` naming where it is in the
request (`messages[0].content[1]`), so every later error can say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from vidlab.serve import sources
from vidlab.serve.errors import ServeError

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass
class MediaRef:
    """One image or video part of a request, before anything is read."""

    kind: Literal["video", "image"]
    url: str | None
    uuid: str | None
    start: float | None
    end: float | None
    where: str  # "messages[0].content[1]"

    @property
    def param(self) -> str:
        return f"{self.where}.{self.kind}_url.url"

    @property
    def label(self) -> str:
        """How error messages and the conversation name this part."""
        if self.url:
            return sources.describe(self.url)
        return f"uuid {self.uuid!r}"



def _url_of(part: dict, kind: str, where: str) -> str | None:
    value = part.get(f"{kind}_url")
    if isinstance(value, dict):
        value = value.get("url")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ServeError(400, f"{where}.{kind}_url.url must be a string URL, got {type(value).__name__}.",
                         param=f"{where}.{kind}_url.url")
    return value


def _seconds(part: dict, name: str, where: str) -> float | None:
    value = part.get(name)
    if value is None and isinstance(part.get("video_url"), dict):
        value = part["video_url"].get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
        raise ServeError(400, f"{where}.{name} must be a number of seconds, 0 or more (got {value!r}).",
                         param=f"{where}.{name}")
    return float(value)


def _text_limit(chars: int, limit: int) -> ServeError:
    return ServeError(400, f"messages: {chars:,} characters of text or more, over the server's limit of {limit:,} per "
                      "request (max_request_text_chars). Send less text.", code="text_too_long", param="messages")


def read_messages(
    messages: list[dict[str, Any]], max_parts: int, max_chars: int | None = None
) -> tuple[list[dict], list[MediaRef]]:
    """OpenAI messages -> vidlab chat messages (for `parse_messages`) and the media parts, in order.

    Raises:
        ServeError: 400 naming the message and part (unknown type or role, a part without a url or
            uuid, too many media parts, more than `max_chars` characters of text).
    """
    converted, refs = [], []
    chars = 0

    def count(text: str) -> None:  # before anything tokenizes it: a huge text never reaches the tokenizer
        nonlocal chars
        chars += len(text)
        if max_chars is not None and chars > max_chars:
            raise _text_limit(chars, max_chars)

    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ServeError(400, f"{where} must be an object with role and content.", param=where)
        role = ROLES.get(str(message.get("role", "")).lower())
        if role is None:
            raise ServeError(400, f"{where}.role: {message.get('role')!r} is not supported. Use system, user or "
                             "assistant.", param=f"{where}.role")
        content = message.get("content")
        if content is None:
            content = ""
        if isinstance(content, str):
            count(content)
            converted.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise ServeError(400, f"{where}.content must be a string or a list of parts.", param=f"{where}.content")
        items = []
        for j, part in enumerate(content):
            at = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise ServeError(400, f"{at}.text must be a string.", param=f"{at}.text")
                count(text)
                items.append({"type": "text", "text": text})
            elif kind in ("image_url", "video_url"):
                media = kind.removesuffix("_url")
                uuid = part.get("uuid")
                if uuid is not None and (not isinstance(uuid, str) or not uuid):
                    raise ServeError(400, f"{at}.uuid must be a non-empty string.", param=f"{at}.uuid")
                url = _url_of(part, media, at)
                if url is None and uuid is None:
                    raise ServeError(400, f"{at} has neither {kind}.url nor uuid. Give the media's URL (and "
                                     "optionally a uuid to resend it by later).", param=f"{at}.{kind}")
                start, end = (_seconds(part, "start", at), _seconds(part, "end", at)) if media == "video" else \
                    (None, None)
                ref = MediaRef(media, url, uuid, start, end, at)
                refs.append(ref)
                item = {"type": media, media: ref.label}
                if media == "video":
                    item.update(start=start, end=end)
                items.append(item)
            else:
                raise ServeError(400, f"{at}: content type {kind!r} is not supported. Use text, image_url or "
                                 "video_url.", param=f"{at}.type")
        converted.append({"role": role, "content": items})
    if len(refs) > max_parts:
        raise ServeError(400, f"messages: {len(refs)} images and videos, over the server's limit of {max_parts} per "
                         "request. Send fewer, or raise --max-media-parts.", code="too_many_media_parts",
                         param="messages")
    return converted, refs
