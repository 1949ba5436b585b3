"""Errors a client can cause, as OpenAI-style JSON bodies with a 4xx status (503 when it should retry).

Every vidlab user error (`VidlabError`) that a request triggers becomes a `ServeError` whose message
starts with the request part it is about (`messages[0].content[1].video_url.url: ...`) and says
what to change. Anything else is a bug in vidlab: that request gets a 500, the server keeps going.
"""

from __future__ import annotations

import math
import re

from vidlab.errors import (
    ClipWindowError,
    ConversationError,
    MediaError,
    MediaNotFoundError,
    SampleError,
    SettingsError,
    VidlabError,
)
from vidlab.record_kinds import kind_of

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


# A code for errors that name none of their own, by status (OpenAI fills `code` where it can).
_CODES = {400: "invalid_request", 401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed",
          413: "request_too_large", 422: "unprocessable", 429: "rate_limited", 500: "internal_error",
          503: "unavailable"}

# Library wording meant for the command line or a records file, as an API client would say it.
_CLIENT_WORDING = {
    "Fix the start/end of the record or the --start/--end options.": "Fix the part's start and end.",
    " Get the whole file again, or allow partial videos (allow_partial: --allow-partial, data.allow_partial: true).":
        " Send the whole file.",
    "shorten the conversation or raise model_max_length.": "shorten the messages.",
}


_FLAG = re.compile(r"(^|[\s(/])--[a-z][a-z-]+")
_FLAG_ASIDE = re.compile(r" ?\([^()]*--[a-z][^()]*\)")


def client_text(message: str) -> str:
    """A library error's message as an API client reads it (no command-line options, no record files)."""
    for said, meant in _CLIENT_WORDING.items():
        message = message.replace(said, meant)
    if not _FLAG.search(message):
        return message
    # Wording not known above: asides naming options go, and so do later sentences (the fix for a command-line
    # user) that name one; the first sentence says what is wrong and stays.
    message = _FLAG_ASIDE.sub("", message)
    first, *rest = message.split(". ")
    kept = ". ".join([first, *(sentence for sentence in rest if not _FLAG.search(sentence))])
    return kept if kept.endswith(".") else kept + "."


class ServeError(VidlabError):
    """A request the server answers with an error status.

    Args:
        status: HTTP status (400, 401, 404, 413, 422, 429, 503).
        message: what is wrong, starting with the request part, and the fix.
        code: a short machine-readable reason (`model_not_found`, `queue_full`, ...).
        param: the request field it is about, when there is one.
        retry_after: seconds a client should wait before sending it again (429, 503).
    """

    def __init__(
        self, status: int, message: str, *, code: str | None = None, param: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after

    @property
    def kind(self) -> str:
        """What the error is about, for metrics."""
        return self.code or _TYPES.get(self.status, "error")

    def body(self) -> dict:
        return error_body(self.status, self.message, code=self.code, param=self.param)

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return headers

    def __reduce__(self):  # Ray sends errors between processes by pickling them
        return (_rebuild, (self.status, self.message, self.code, self.param, self.retry_after))


def _rebuild(status: int, message: str, code: str | None, param: str | None, retry_after: float | None) -> ServeError:
    return ServeError(status, message, code=code, param=param, retry_after=retry_after)


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict:
    """OpenAI's error object: `{"error": {"message", "type", "param", "code"}}` (a code always given)."""
    code = code or _CODES.get(status, "invalid_request" if status < 500 else "internal_error")
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error" if status >= 500 else
                                                               "invalid_request_error"), "param": param, "code": code}}


def from_user_error(err: VidlabError, where: str, param: str | None = None) -> ServeError:
    """The ServeError for a vidlab user error raised while handling one request part (`where`)."""
    if isinstance(err, ServeError):
        return err
    message = client_text(str(err))
    text = message if message.startswith(where) else f"{where}: {message}"
    if kind_of(err) == "over budget":
        return ServeError(400, text, code="context_length_exceeded", param=param or "messages")
    if isinstance(err, (MediaNotFoundError, ClipWindowError)):
        return ServeError(400, text, code="invalid_media", param=param)
    if isinstance(err, (MediaError, SampleError)):
        return ServeError(422, text, code="unprocessable_media", param=param)
    if isinstance(err, SettingsError):
        return ServeError(400, text, code="invalid_settings", param=param)
    if isinstance(err, ConversationError):
        return ServeError(400, text, code="invalid_messages", param=param or "messages")
    return ServeError(400, text, param=param)
