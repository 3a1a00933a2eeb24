"""http(s) attachments: fetched into memory with a size cap, a timeout and a content-type check.

Only the standard library (urllib) is used; redirects are followed; nothing is cached. The limits
default to 100 MiB and 30 s and can be changed with GLMV_FETCH_MAX_BYTES / GLMV_FETCH_TIMEOUT.
Every failure (DNS, refused connection, HTTP error, a web page instead of a file, too big, too
slow) is one InputError naming the URL.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import PurePosixPath

from glmv_cli import __version__
from glmv_cli.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 100 * 2**20
DEFAULT_TIMEOUT = 30.0
CHUNK = 1 << 16
# Content types worth downloading; application/octet-stream and friends are sniffed afterwards.
ACCEPTED_PREFIXES = ("image/", "video/", "text/plain", "text/markdown", "text/csv", "text/x-")
ACCEPTED = ("application/pdf", "application/octet-stream", "binary/octet-stream", "application/json",
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            "application/vnd.ms-powerpoint", "application/vnd.oasis.opendocument.presentation")


@dataclass(frozen=True)
class Fetched:
    url: str  # after redirects
    data: bytes
    content_type: str  # without parameters, lower case; "" when the server sent none
    name: str  # the last path segment, for suffix-based typing


def limits() -> tuple[int, float]:
    """(max bytes, timeout seconds) from the environment, else the defaults."""
    try:
        max_bytes = int(os.environ.get("GLMV_FETCH_MAX_BYTES") or DEFAULT_MAX_BYTES)
        timeout = float(os.environ.get("GLMV_FETCH_TIMEOUT") or DEFAULT_TIMEOUT)
    except ValueError:
        raise InputError("GLMV_FETCH_MAX_BYTES must be an integer and GLMV_FETCH_TIMEOUT a number "
                         "of seconds") from None
    if max_bytes <= 0 or not timeout > 0:
        raise InputError("GLMV_FETCH_MAX_BYTES and GLMV_FETCH_TIMEOUT must be more than 0")
    return max_bytes, timeout


def fetch(url: str, *, max_bytes: int | None = None, timeout: float | None = None) -> Fetched:
    """GET `url`; InputError for HTTP errors, unsupported types, more than `max_bytes`, timeouts."""
    env_max, env_timeout = limits()
    max_bytes = env_max if max_bytes is None else max_bytes
    timeout = env_timeout if timeout is None else timeout
    try:
        request = urllib.request.Request(url, headers={"User-Agent": f"glmv/{__version__}"})
    except ValueError as e:  # ("http://[::1/x.png": Invalid IPv6 URL)
        raise InputError(f"{url} is not a valid URL ({e}); check the address") from None
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            content_type = response.headers.get_content_type() if response.headers.get("Content-Type") else ""
            _check_type(url, content_type)
            _check_length(url, response.headers.get("Content-Length"), max_bytes)
            data = _read_capped(response, url, max_bytes)
            final = response.geturl()
    except urllib.error.HTTPError as e:
        raise InputError(f"{url}: the server answered HTTP {e.code} {e.reason}; check the address") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise _timeout(url, timeout) from None
        raise InputError(f"{url} could not be fetched ({reason}); check the address and your connection, "
                         f"or download it and attach the file") from None
    except (TimeoutError, socket.timeout):
        raise _timeout(url, timeout) from None
    except (ValueError, OSError, http.client.HTTPException) as e:  # a malformed URL, a reset or a bad answer
        raise InputError(f"{url} could not be fetched ({e}); check the address") from None
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlparse(final).path)).name
    log.info("fetched %s: %d bytes, %s", final, len(data), content_type or "no content type")
    return Fetched(final, data, content_type, name)


def _timeout(url: str, timeout: float) -> InputError:
    return InputError(f"{url} did not answer within {timeout:g} s; try again, or set GLMV_FETCH_TIMEOUT "
                      f"to wait longer")


def _check_type(url: str, content_type: str) -> None:
    if not content_type or content_type.startswith(ACCEPTED_PREFIXES) or content_type in ACCEPTED:
        return
    if content_type in ("text/html", "application/xhtml+xml"):
        raise InputError(f"{url} is a web page (text/html), not an image, PDF or video; link the file "
                         f"itself (e.g. the image's own address)")
    raise InputError(f"{url} serves {content_type}, which glmv cannot read; it reads images, PDFs, videos, "
                     f"PowerPoint slides and text")


def _check_length(url: str, header: str | None, max_bytes: int) -> None:
    if header and header.isdigit() and int(header) > max_bytes:
        raise InputError(_too_big(url, f"{int(header):,} bytes", max_bytes))


def _read_capped(response, url: str, max_bytes: int) -> bytes:
    chunks, size = [], 0
    while True:
        chunk = response.read(CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise InputError(_too_big(url, "more than that", max_bytes))
        chunks.append(chunk)


def _too_big(url: str, size: str, max_bytes: int) -> str:
    return (f"{url} is {size}, over the {max_bytes:,}-byte download limit; download it yourself and "
            f"attach the file, or raise GLMV_FETCH_MAX_BYTES")
