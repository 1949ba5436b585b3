"""The page as a client of a running `vidlab serve` (or any OpenAI-compatible server taking video parts).

Requests go through the `openai` client: a video is a `video_url` part (a `data:` URL of the file)
with a `uuid` (its content hash), so follow-up questions send the uuid alone and the server answers
from the clip it already decoded; the page's frame settings go in `mm_processor_kwargs`, the clip
window as the part's `start` / `end`. Token counts come from the server's `vidlab` field of the
last stream chunk. Adapters are model names (`GET /v1/models`).
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vidlab.errors import VidlabError
from vidlab.settings import GenerationOptions, MediaSettings
from vidlab.web.backend import AnswerInfo, MediaChoice, Preview
from vidlab.web.media import check_video_length, strip_frames

_MIME = {".mkv": "video/x-matroska", ".webm": "video/webm", ".avi": "video/x-msvideo", ".mov": "video/quicktime"}


class ServerError(VidlabError):
    """The server refused a request or could not be reached."""


def _describe(err: Exception, url: str) -> ServerError:
    """One line for the page from an openai client error."""
    import openai

    if isinstance(err, openai.APIConnectionError):
        return ServerError(f"cannot reach the server at {url} ({err.__class__.__name__}). Start it (`vidlab serve "
                           "--model ...`) or fix --api.")
    if isinstance(err, openai.APIStatusError):
        body = err.body if isinstance(err.body, dict) else {}
        inner = body.get("error", body) if isinstance(body, dict) else {}
        message = inner.get("message") if isinstance(inner, dict) else None
        return ServerError(f"the server answered {err.status_code}: {message or err.message}")
    return ServerError(f"the server's answer could not be read: {err}")


def _code(err: Exception) -> str | None:
    body = getattr(err, "body", None)
    inner = body.get("error", body) if isinstance(body, dict) else None
    return inner.get("code") if isinstance(inner, dict) else None


def _data_url(path: Path) -> tuple[str, str]:
    """(data: URL, sha256) of a file."""
    data = path.read_bytes()
    kind = _MIME.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(data).decode()}", hashlib.sha256(data).hexdigest()


def media_parts(media: MediaChoice, with_urls: bool, digests: dict[Path, str]) -> list[dict[str, Any]]:
    """OpenAI content parts for the media; without urls, only their uuids (the server's cache)."""
    parts = []
    for kind, path in [("video", media.video)] * (media.video is not None) + [("image", p) for p in media.images]:
        part: dict[str, Any] = {"type": f"{kind}_url"}
        if with_urls or path not in digests:
            url, digests[path] = _data_url(path)
            part[f"{kind}_url"] = {"url": url}
        part["uuid"] = digests[path]
        if kind == "video":
            part.update({k: v for k, v in (("start", media.start), ("end", media.end)) if v is not None})
        parts.append(part)
    return parts


def request_settings(settings: MediaSettings, generation: GenerationOptions) -> dict[str, Any]:
    """The request fields that carry the page's settings (sent every time, so the server's own defaults
    cannot make its frames differ from the strip the page shows)."""
    frames = {"num_frames": settings.num_frames} if settings.num_frames else \
        {"fps": settings.fps, "max_frames": settings.max_frames}
    return {"max_tokens": generation.max_new_tokens, "temperature": generation.temperature,
            "extra_body": {"mm_processor_kwargs": {**frames, "frame_rule": settings.frame_rule,
                                                   "compression": settings.compression}}}


def _info(extra: dict | None, usage) -> AnswerInfo:
    extra = extra or {}
    return AnswerInfo(
        frames=[t for times in extra.get("frames") or [] for t in times],
        visual_tokens=extra.get("visual_tokens"),
        visual_tokens_before_pruning=extra.get("visual_tokens_before_pruning"),
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        generated_tokens=getattr(usage, "completion_tokens", None),
        warnings=list(extra.get("warnings") or []),
    )


class RemoteBackend:
    """A client of the server at `url` (its root or its /v1).

    Args:
        api_key: the server's key (`vidlab serve --api-key`), if it has one.
        timeout: seconds one answer may take.
        max_video_seconds: longer videos are refused before they are sent (None: the server decides).
    """

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 600.0,
                 max_video_seconds: float | None = None):
        from openai import OpenAI

        base = url.rstrip("/")
        self.url = base if base.endswith("/v1") else base + "/v1"
        self.mode = f"client of {self.url}"
        self.max_video_seconds = max_video_seconds
        self.client = OpenAI(base_url=self.url, api_key=api_key or "none", timeout=timeout, max_retries=0)
        try:
            listed = self.client.models.list().data
        except Exception as err:  # any client error becomes one line naming the server
            raise _describe(err, self.url) from None
        if not listed:
            raise ServerError(f"{self.url}/models lists no model. Is it a vidlab serve server?")
        bases = [m.id for m in listed if not getattr(m, "parent", None)]
        self.base_name = bases[0] if bases else listed[0].id
        self.adapters = [m.id for m in listed if m.id != self.base_name]

    def model_names(self) -> list[str]:
        return [self.base_name, *self.adapters]

    def close(self) -> None:
        self.client.close()

    def preview(self, media: MediaChoice, settings: MediaSettings) -> Preview:
        if media.video is None:
            import numpy as np
            from PIL import Image

            frames = [np.asarray(Image.open(path).convert("RGB")) for path in media.images]
            return Preview(frames, [])
        check_video_length(media.video, self.max_video_seconds)
        frames, stamps, duration, warnings = strip_frames(media.video, settings, media.start, media.end)
        return Preview(frames, stamps, duration=duration, warnings=warnings)

    def conversation(
        self, name: str, system: str | None, settings: MediaSettings, generation: GenerationOptions
    ) -> RemoteConversation:
        return RemoteConversation(self, name, system, settings, generation)

    def stream_messages(self, name: str, messages: list[dict], settings: MediaSettings,
                        generation: GenerationOptions, result: list) -> Iterator[str]:
        """Stream one request's answer; appends (text, AnswerInfo) to `result` at the end."""
        try:
            events = self.client.chat.completions.create(
                model=name, messages=messages, stream=True, stream_options={"include_usage": True},
                **request_settings(settings, generation),
            )
            text, extra, usage = "", None, None
            for event in events:
                extra = (event.model_extra or {}).get("vidlab") or extra
                usage = event.usage or usage
                for choice in event.choices:
                    piece = choice.delta.content or ""
                    if piece:
                        text += piece
                        yield piece
        except VidlabError:
            raise
        except Exception as err:  # the openai client's errors (and broken streams) become one line
            if _code(err) == "uuid_not_cached":
                raise _UuidForgotten() from None
            raise _describe(err, self.url) from None
        result.append((text, _info(extra, usage)))

    def compare(
        self, names: list[str], question: str, media: MediaChoice, system: str | None, settings: MediaSettings,
        generation: GenerationOptions,
    ) -> Iterator[tuple[int, str]]:
        # One request per model, at once: the server batches them, and the answers stream in together.
        talks = [RemoteConversation(self, name, system, settings, generation) for name in names]
        pieces: queue.Queue = queue.Queue()
        failures: list[BaseException] = []

        def answer(index: int) -> None:
            try:
                for piece in talks[index].stream(question, media):
                    pieces.put((index, piece))
            except BaseException as err:  # handed to the page's thread below
                failures.append(err)
            finally:
                pieces.put((index, None))

        threads = [threading.Thread(target=answer, args=(i,), daemon=True) for i in range(len(names))]
        for thread in threads:
            thread.start()
        running = len(threads)
        while running:
            index, piece = pieces.get()
            if piece is None:
                running -= 1
            else:
                yield index, piece
        if failures:
            raise failures[0]
        return [talk.last for talk in talks]


class _UuidForgotten(Exception):
    """The server no longer holds a clip sent earlier by uuid: send it again."""


class RemoteConversation:
    """A conversation kept on the page (the server is stateless): every request carries the history."""

    def __init__(self, backend: RemoteBackend, name: str, system: str | None, settings: MediaSettings,
                 generation: GenerationOptions):
        if name not in backend.model_names():
            raise VidlabError(f"model {name!r}: the server does not serve it. Pick one of "
                              f"{', '.join(backend.model_names())}.")
        self.backend, self.name, self.settings, self.generation = backend, name, settings, generation
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self.media: MediaChoice | None = None
        self.digests: dict[Path, str] = {}
        self.last: AnswerInfo | None = None

    def set_generation(self, generation: GenerationOptions) -> None:
        self.generation = generation

    def forget_last(self) -> None:
        if len(self.messages) >= 2 and self.messages[-1]["role"] == "assistant":
            self.messages = self.messages[:-2]

    def _messages(self, question: str, with_urls: bool) -> list[dict]:
        messages = [dict(m) for m in self.messages]
        first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
        if first_user is not None and self.media is not None:
            text = messages[first_user]["content"]
            messages[first_user]["content"] = [*media_parts(self.media, with_urls, self.digests),
                                               {"type": "text", "text": text}]
        return [*messages, {"role": "user", "content": question}]

    def stream(self, question: str, media: MediaChoice | None) -> Iterator[str]:
        if media is not None and not media.empty:
            if media.video is not None:
                check_video_length(media.video, self.backend.max_video_seconds)
            self.media = media
        new = self.media is not None and not any(m["role"] == "user" for m in self.messages)
        if new:  # the first question carries the media as urls
            messages = self._messages(question, with_urls=False)
            messages[-1]["content"] = [*media_parts(self.media, True, self.digests),
                                       {"type": "text", "text": question}]
        else:
            messages = self._messages(question, with_urls=False)
        result: list = []
        try:
            yield from self.backend.stream_messages(self.name, messages, self.settings, self.generation, result)
        except _UuidForgotten:
            messages = self._messages(question, with_urls=True)
            yield from self.backend.stream_messages(self.name, messages, self.settings, self.generation, result)
        text, self.last = result[0]
        self.messages += [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
