"""Fetching the issuer's documents: metadata, JWKS and status lists.

Only the issuer's own URLs are fetched (``https``, or ``http`` on a loopback host for a
development issuer), with a timeout and a size bound, and never a redirect elsewhere.
"""

import ipaddress
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_BYTES = 4 << 20  # the largest document read: a status list of a million bits fits in 128 KiB
TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Fetched:
    """One HTTP answer: its status, body and ``Cache-Control: max-age`` (``None`` if absent)."""

    status: int
    body: bytes
    max_age: int | None = None


Fetch = Callable[[str], Fetched]
"""How the verifier reaches the issuer: a function from URL to answer. The default is
:func:`fetch_url`; tests and frameworks with their own HTTP client pass another."""


class FetchFailed(Exception):
    """The document could not be fetched (network, timeout, size, scheme)."""


def loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_allowed(url: str) -> bool:
    """``https`` anywhere, ``http`` only on a loopback host (a development issuer)."""
    parts = urlsplit(url)
    if not parts.hostname or parts.username or parts.password:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and loopback(parts.hostname))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age=(\d+)", re.IGNORECASE)


def fetch_url(url: str) -> Fetched:
    """GET ``url`` with the standard library: no redirects, :data:`TIMEOUT_SECONDS`, at most
    :data:`MAX_BYTES`."""
    if not url_allowed(url):
        raise FetchFailed(f"refusing to fetch {url!r}: https only (http on loopback)")
    request = urllib.request.Request(url, headers={"Accept": "application/json, application/jwt"})  # noqa: S310 - scheme checked above
    try:
        with _opener.open(request, timeout=TIMEOUT_SECONDS) as answer:
            body = answer.read(MAX_BYTES + 1)
            status = int(answer.status)
            cache_control = answer.headers.get("Cache-Control", "")
    except urllib.error.HTTPError as error:
        return Fetched(status=error.code, body=b"")
    except (OSError, ValueError) as error:
        raise FetchFailed(f"{url}: {error}") from error
    if len(body) > MAX_BYTES:
        raise FetchFailed(f"{url}: larger than {MAX_BYTES} bytes")
    match = _MAX_AGE.search(cache_control)
    return Fetched(status=status, body=body, max_age=int(match.group(1)) if match else None)
