"""Where a media URL's bytes come from: a `data:` URL, a file under the media root, or (when allowed) http(s).

Local files are served only from inside `--media-root`, after following every symlink, and never
without one. Uploads and downloads are size-limited before they are held, and downloads time-limited.
"""

from __future__ import annotations

import base64
import binascii
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from vidlab.serve.errors import ServeError
from vidlab.serve.options import MIB, ServeOptions

# data:[<media type>][;base64],<data>
_DATA_PREFIX = "data:"
_CHUNK = 1 << 16


def _size(n: int) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n / 1024:.0f} KiB"


def is_data_url(url: str) -> bool:
    return url[:5].lower() == _DATA_PREFIX


def is_remote(url: str) -> bool:
    return urlparse(url).scheme.lower() in ("http", "https")


def describe(url: str) -> str:
    """The URL as error messages show it (a data: URL by its type and size, not its content)."""
    if is_data_url(url):
        header = url.split(",", 1)[0]
        return f"{header},... ({_size(len(url) * 3 // 4)} uploaded)"
    return url if len(url) <= 200 else url[:200] + "..."


def read_data_url(url: str, limit: int, where: str) -> tuple[bytes, str]:
    """The bytes of a base64 `data:` URL and its media type.

    Raises:
        ServeError: 413 when larger than `limit` bytes (checked before decoding), 400 when malformed.
    """
    header, sep, payload = url.partition(",")
    if not sep or not header.lower().endswith(";base64"):
        raise ServeError(400, f"{where}: a data: URL must be base64 (data:video/mp4;base64,...). Encode the file "
                         "with base64.", code="invalid_media", param=where)
    if len(payload) * 3 // 4 > limit:
        raise ServeError(413, f"{where}: the upload is {_size(len(payload) * 3 // 4)}, over the server's limit of "
                         f"{_size(limit)} per media part. Send a shorter or smaller file, or raise --max-media-mb.",
                         code="media_too_large", param=where)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ServeError(400, f"{where}: the data: URL is not valid base64 ({err}). Encode the file with base64.",
                         code="invalid_media", param=where) from None
    return data, header[len(_DATA_PREFIX):].split(";", 1)[0].lower()


def local_path(text: str, options: ServeOptions, where: str) -> Path:
    """The file a path or `file://` URL names, which must lie inside the media root (symlinks followed).

    Raises:
        ServeError: 400 without a media root, for a path outside it, or for a missing file.
    """
    if text.lower().startswith("file:"):
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise ServeError(400, f"{where}: file:// URLs name files on this server only (got host "
                             f"{parsed.netloc!r}). Use file:///path.", code="invalid_media", param=where)
        text = unquote(parsed.path)
    elif "://" in text or text.lower().startswith(("http:", "https:")):
        scheme = text.split(":", 1)[0]
        raise ServeError(400, f"{where}: unsupported URL scheme {scheme!r}. Use a data: URL, a file under the "
                         "server's media root, or http(s) when the server allows remote media.",
                         code="invalid_media", param=where)
    if "\x00" in text:
        raise ServeError(400, f"{where}: the path holds a NUL character. Fix the path.", code="invalid_media",
                         param=where)
    if options.media_root is None:
        raise ServeError(400, f"{where}: this server reads no local files (it was started without --media-root). "
                         "Send the media as a data: URL, or start the server with --media-root DIR.",
                         code="local_media_disabled", param=where)
    root = Path(options.media_root).resolve()
    path = Path(text).expanduser()
    resolved = (path if path.is_absolute() else root / path).resolve()
    if not resolved.is_relative_to(root):
        raise ServeError(400, f"{where}: {text} is outside the server's media root (after following links). Name "
                         "a file inside the media root, relative to it, or send the media as a data: URL.",
                         code="media_outside_root", param=where)
    if not resolved.exists():
        raise ServeError(400, f"{where}: {text}: no such file under the server's media root. Check the path "
                         "(relative paths are relative to the media root).", code="invalid_media", param=where)
    return resolved


def download(url: str, options: ServeOptions, where: str) -> tuple[bytes, str]:
    """The bytes of an http(s) URL and its content type, within the size and time limits.

    Raises:
        ServeError: 400 when remote media are off, or the download fails or times out; 413 when too large.
    """
    if not options.allow_remote_media:
        raise ServeError(400, f"{where}: this server does not fetch remote media. Send the media as a data: URL, or "
                         "start the server with --allow-remote-media.", code="remote_media_disabled", param=where)
    import httpx2

    limit, seconds = options.max_media_bytes, options.remote_timeout
    too_large = ServeError(413, f"{where}: {describe(url)} is over the server's limit of {_size(limit)} per media "
                           "part. Use a smaller file, or raise --max-media-mb.", code="media_too_large", param=where)
    deadline = time.monotonic() + seconds
    try:
        with httpx2.Client(timeout=seconds, follow_redirects=True, max_redirects=3) as client:
            with client.stream("GET", url) as response:
                response.raise_for_status()
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise too_large
                parts, held = [], 0
                for part in response.iter_bytes(_CHUNK):
                    held += len(part)
                    if held > limit:
                        raise too_large
                    if time.monotonic() > deadline:
                        raise httpx2.ReadTimeout("download took too long")
                    parts.append(part)
                kind = response.headers.get("content-type", "").split(";", 1)[0].lower()
    except httpx2.TimeoutException:
        raise ServeError(400, f"{where}: {describe(url)} did not download within {seconds:g} s. Use a faster host "
                         "or a smaller file, or send it as a data: URL.", code="remote_media_failed",
                         param=where) from None
    except httpx2.HTTPStatusError as err:
        raise ServeError(400, f"{where}: {describe(url)} answered HTTP {err.response.status_code}. Check the URL.",
                         code="remote_media_failed", param=where) from None
    except httpx2.HTTPError as err:
        raise ServeError(400, f"{where}: could not fetch {describe(url)} ({err}). Check the URL.",
                         code="remote_media_failed", param=where) from None
    return b"".join(parts), kind
