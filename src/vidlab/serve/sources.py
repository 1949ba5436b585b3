"""Where a media URL's bytes come from: a `data:` URL, a file under the media root, or (when allowed) http(s).

Local files are served only from inside `--media-root`, after following every symlink, and never
without one. Uploads and downloads are size-limited before they are held, and downloads time-limited.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
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
                         f"{_size(limit)} per media part (max_media_mb). Send a shorter or smaller file.",
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
        raise ServeError(400, f"{where}: this server reads no local files (it has no media root). Send the media as "
                         "a data: URL (the server's operator can set a media root).",
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


_REDIRECTS = 3
_BLOCKED = "is not a public address"


def _failed(where: str, url: str) -> ServeError:
    # One message for every way a fetch can fail (refused, unreachable, HTTP error, blocked address), so that
    # errors do not tell a client which hosts or ports of the server's network answer.
    return ServeError(400, f"{where}: could not fetch {describe(_without_query(url))}. Check that the URL is public "
                      "and serves the file, or send the media as a data: URL.", code="remote_media_failed",
                      param=where)


def _without_query(url: str) -> str:
    return url.split("?", 1)[0]


def check_url(url: str, options: ServeOptions, where: str) -> str:
    """The host of an http(s) media URL the server may fetch.

    Raises:
        ServeError: 400 for credentials in the URL, or a host outside `allowed_media_domains`.
    """
    parsed = urlparse(url)
    if parsed.scheme.lower() not in ("http", "https"):
        raise ServeError(400, f"{where}: only http and https media URLs are fetched. Fix the URL.",
                         code="invalid_media", param=where)
    if parsed.username is not None or parsed.password is not None or "@" in parsed.netloc:
        raise ServeError(400, f"{where}: the URL holds credentials (user:password@). Remove them; the server does "
                         "not send credentials for media.", code="invalid_media", param=where)
    host = (parsed.hostname or "").lower().rstrip(".")
    if not host:
        raise ServeError(400, f"{where}: the URL has no host. Fix the URL.", code="invalid_media", param=where)
    allowed = options.allowed_media_domains
    if allowed is not None and not any(host == d.lower() or host.endswith("." + d.lower()) for d in allowed):
        raise ServeError(400, f"{where}: host {host!r} is not among the media domains this server allows "
                         f"({', '.join(allowed)}). Use one of them, or send the media as a data: URL.",
                         code="media_domain_not_allowed", param=where)
    return host


async def _public_address(host: str, port: int, options: ServeOptions) -> str | None:
    """An address of `host` the server may connect to (None: it resolves to a private one, or to none)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    # IPv4 first: a host often listens on one family only, and most on IPv4
    addresses = sorted((info[4][0] for info in infos), key=lambda address: ":" in address)
    if not addresses:
        return None
    if options.allow_private_media_addresses:
        return addresses[0]
    for address in addresses:  # every address must be public: DNS may answer differently next time
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not ip.is_global or ip.is_multicast:
            return None
    return addresses[0]


async def download(url: str, options: ServeOptions, where: str) -> tuple[bytes, str]:
    """The bytes of an http(s) URL and its content type, within the size and wall-clock time limits.

    Every hop (redirects are followed by hand, at most 3) is checked as the first URL: no credentials,
    an allowed domain, and (unless the server allows private addresses) a host whose every DNS address
    is public; the connection goes to the address checked, so DNS cannot answer differently in between.

    Raises:
        ServeError: 400 when remote media are off, the URL is refused, or the download fails or takes
            longer than `remote_timeout` in all; 413 when larger than `max_media_mb` (as bytes arrive).
    """
    if not options.allow_remote_media:
        raise ServeError(400, f"{where}: this server does not fetch remote media. Send the media as a data: URL "
                         "(the server's operator can allow remote media).", code="remote_media_disabled",
                         param=where)
    import httpx2

    limit, seconds = options.max_media_bytes, options.remote_timeout
    too_large = ServeError(413, f"{where}: {describe(_without_query(url))} is over the server's limit of "
                           f"{_size(limit)} per media part (max_media_mb). Use a smaller file.",
                           code="media_too_large", param=where)
    current = url
    try:
        async with asyncio.timeout(seconds):  # the whole transfer, however slowly the bytes come
            async with httpx2.AsyncClient(timeout=seconds, follow_redirects=False, trust_env=False) as client:
                for _ in range(_REDIRECTS + 1):
                    host = check_url(current, options, where)
                    target = httpx2.URL(current)
                    address = await _public_address(host, target.port or (443 if target.scheme == "https" else 80),
                                                    options)
                    if address is None:
                        raise _failed(where, url)
                    pinned = target.copy_with(host=address)
                    request = client.build_request("GET", pinned, headers={"Host": target.netloc.decode("ascii")},
                                                   extensions={"sni_hostname": host})
                    response = await client.send(request, stream=True)
                    try:
                        if response.is_redirect and "location" in response.headers:
                            current = str(target.join(response.headers["location"]))
                            continue
                        if response.status_code != 200:
                            raise _failed(where, url)
                        declared = response.headers.get("content-length")
                        if declared is not None and declared.isdigit() and int(declared) > limit:
                            raise too_large
                        parts, held = [], 0
                        async for part in response.aiter_bytes(_CHUNK):
                            held += len(part)
                            if held > limit:
                                raise too_large
                            parts.append(part)
                        kind = response.headers.get("content-type", "").split(";", 1)[0].lower()
                        return b"".join(parts), kind
                    finally:
                        await response.aclose()
                raise _failed(where, url)
    except (TimeoutError, httpx2.TimeoutException):
        raise ServeError(400, f"{where}: {describe(_without_query(url))} did not download within {seconds:g} s. Use "
                         "a faster host or a smaller file, or send it as a data: URL.", code="remote_media_failed",
                         param=where) from None
    except (httpx2.HTTPError, httpx2.InvalidURL, OSError, ValueError):
        raise _failed(where, url) from None
