"""The one guard for outbound HTTP (webhooks now; partner metadata, JWKS and DID documents next).

Every request to a URL someone else chose goes through here:

1. :func:`url_parse` reads the URL strictly: http(s) only, no credentials, at most 2,048
   characters, the host normalised (IDNA, lower case, no trailing dot) and any numeric
   spelling of an IPv4 address (decimal ``2130706433``, octal ``0177.0.0.1``, hex ``0x7f.1``,
   short ``127.1``) read the way the C library would read it, so it is checked as the address
   it really is.
2. :func:`url_check` resolves the host and checks **every** address: loopback, private,
   link-local (169.254.169.254 included), CGNAT 100.64/10, multicast, reserved, unspecified,
   IPv4-mapped and -compatible IPv6, NAT64, 6to4, Teredo, site-local and unique-local are all
   refused, as is any scheme but https (http only with ``WEBHOOK_ALLOW_HTTP``), any port but
   the allowed ones (``SSRF_ALLOWED_PORTS``: ports and ranges), and, whatever is allowed, the
   ports of the deployment's own services (:func:`service_ports`: PostgreSQL, Redis, Vault,
   the brokers, the well-known ones and every port in the configured service URLs).
   ``SSRF_ALLOWLIST`` (addresses or CIDRs) exempts its addresses from the address rule only,
   for tests, development or a receiver an operator deliberately allows: never from the
   scheme and port rules, so ``http://127.0.0.1:6379/`` stays refused however loopback is
   allowed.
3. :func:`outbound_request` connects to an address that was just checked (resolved again for
   each request, so a name that rebinds to a private address after it was accepted is refused
   at delivery), sends the request with the original host in ``Host`` and in TLS SNI and
   certificate verification, follows no redirect, and bounds the connect time, the total time
   and the size of the response it reads.

A refusal says only that the URL is not allowed (:class:`UrlRefused`); it never connects to
find out, so it cannot tell anyone whether a port is open.
"""

import ipaddress
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import cast
from urllib.parse import urlsplit

from django.conf import settings
from django.utils.module_loading import import_string
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util import Timeout

from agentidp.lru import BoundedLRU

MAX_URL_LENGTH = 2048
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

REFUSED = "The URL is not allowed."

# Beyond what ipaddress already calls non-global: ranges that reach an IPv4 address (which
# may be private) through IPv6, and ranges that are not unicast on the public Internet.
_FORBIDDEN_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "100.64.0.0/10",  # carrier-grade NAT
        "192.0.0.0/24",  # IETF protocol assignments
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
        "::/96",  # IPv4-compatible (deprecated)
        "::ffff:0:0/96",  # IPv4-mapped
        "64:ff9b::/96",  # NAT64, well-known prefix
        "64:ff9b:1::/48",  # NAT64, local use
        "100::/64",  # discard-only
        "2001::/32",  # Teredo
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)

# Host names that are numbers: digits, hex and dots only (with at least one digit).
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*$")


class UrlRefused(ValueError):
    """The URL may not be called. ``reason`` is for our logs; the message is all a caller sees."""

    def __init__(self, reason: str, message: str = REFUSED) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ParsedUrl:
    """A URL read strictly: what it asks to reach, before any name is resolved."""

    scheme: str
    host: str  # IDNA, lower case, no trailing dot; an IP literal in its canonical form
    port: int
    target: str  # path and query, sent as the request target
    literal: IPAddress | None  # the host, when it is an address in some spelling

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True)
class CheckedUrl:
    """A parsed URL and the addresses it resolved to, every one of them allowed."""

    url: ParsedUrl
    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True)
class OutboundPolicy:
    """What the guard allows, from settings."""

    allow_http: bool
    allowed_ports: tuple[tuple[int, int], ...]  # inclusive ranges
    allowlist: tuple[IPNetwork, ...]
    denied_ports: frozenset[int]

    def port_allowed(self, port: int) -> bool:
        return port not in self.denied_ports and any(
            low <= port <= high for low, high in self.allowed_ports
        )

    def rules(self) -> str:
        """What a refused address or port is told: the rules, the same words for both (so a
        refusal never tells whether something listens at an address or port)."""
        ports = ", ".join(
            str(low) if low == high else f"{low}-{high}" for low, high in self.allowed_ports
        )
        return (
            f"{REFUSED} Outbound calls go only to public addresses (never loopback, private, "
            "link-local such as 169.254.169.254, or other reserved networks), on ports "
            f"{ports}, and never to a port of this deployment's own services (PostgreSQL, "
            "Redis, Vault and the like)."
        )


# Ports of infrastructure a deployment runs beside itself, never a webhook receiver's or an
# issuer's: PostgreSQL, Redis, Vault/OpenBao, NATS, Kafka, RabbitMQ, memcached, etcd, Consul,
# Elasticsearch, MongoDB, MySQL, OPA, the Docker and Kubernetes APIs, the kubelet, ZooKeeper.
SERVICE_PORTS = frozenset({
    5432, 6379, 6380, 8200, 8201, 4222, 6222, 8222, 9092, 9093, 5672, 15672, 25672, 11211,
    2379, 2380, 8500, 8300, 9200, 9300, 27017, 3306, 8181, 2375, 2376, 6443, 10250, 2181,
})  # fmt: skip
SERVICE_URL_SETTINGS = ("DATABASE_URL", "DATABASE_OWNER_URL", "REDIS_URL", "CELERY_BROKER_URL")


def service_ports() -> frozenset[int]:
    """:data:`SERVICE_PORTS` and every port in the service URLs this deployment is configured
    with (its database, Redis, broker, Vault, NATS, Kafka, OPA): an embedded Redis on a free
    port is refused like the standard one."""
    urls = [str(getattr(settings, name, "") or "") for name in SERVICE_URL_SETTINGS]
    config: dict[str, object] = settings.AGENTIDP
    vault = config.get("VAULT")
    if isinstance(vault, dict):
        urls.append(str(vault.get("ADDR", "")))
    urls += [
        str(config.get("NATS_URL", "")),
        str(cast(dict[str, object], config["POLICY"]).get("OPA_URL", "")),
    ]
    urls += [
        f"kafka://{b.strip()}" for b in str(config.get("KAFKA_BROKERS", "")).split(",") if b.strip()
    ]
    return SERVICE_PORTS | _ports_of(tuple(urls))


@cache
def _ports_of(urls: tuple[str, ...]) -> frozenset[int]:
    found: set[int] = set()
    for url in urls:
        for part in url.split(","):  # nats://a:4222,b:4223
            try:
                port = urlsplit(part if "://" in part else f"x://{part}").port
            except ValueError:
                continue
            if port is not None:
                found.add(port)
    return frozenset(found)


def outbound_policy() -> OutboundPolicy:
    raw: dict[str, object] = settings.AGENTIDP
    return OutboundPolicy(
        allow_http=bool(raw["WEBHOOK_ALLOW_HTTP"]),
        allowed_ports=_port_ranges(tuple(str(p) for p in _items(raw["SSRF_ALLOWED_PORTS"]))),
        allowlist=_allowlist(tuple(str(item) for item in _items(raw["SSRF_ALLOWLIST"]))),
        denied_ports=service_ports(),
    )


@cache
def _port_ranges(entries: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """``443``, ``1024-65535``: each an inclusive range."""
    ranges: list[tuple[int, int]] = []
    for entry in entries:
        low, _, high = entry.strip().partition("-")
        ranges.append((int(low), int(high or low)))
    return tuple(ranges)


def _items(value: object) -> list[object]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return list(value)
    return []


@cache
def _allowlist(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address a numeric host name means to the C library (``inet_aton``), if it is one."""
    if not _NUMERIC_HOST.match(host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError as exc:
        raise UrlRefused(f"malformed numeric host {host!r}") from exc


def _reject_text(url: str) -> None:
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused("too long", f"The URL must be at most {MAX_URL_LENGTH} characters.")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF for ch in url):
        raise UrlRefused("control or space characters", "The URL must not contain spaces or "
                         "control characters.")  # fmt: skip


def url_parse(url: str) -> ParsedUrl:
    """Read ``url`` strictly; raise :class:`UrlRefused` for anything but a plain http(s) URL."""
    _reject_text(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused("unparseable", "The URL is not valid.") from exc
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise UrlRefused(f"scheme {scheme!r}", "The URL must use https.")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise UrlRefused("credentials", "The URL must not contain credentials.")
    raw_host = parts.hostname or ""
    if not raw_host:
        raise UrlRefused("no host", "The URL must name a host.")
    if "%" in raw_host:
        raise UrlRefused("zone id or escape in host")
    literal: IPAddress | None = None
    if parts.netloc.split(":")[0].startswith("[") or ":" in raw_host:
        try:
            literal = ipaddress.IPv6Address(raw_host)
        except ValueError as exc:
            raise UrlRefused("malformed IPv6 literal", "The URL is not valid.") from exc
        host = str(literal)
    else:
        name = raw_host.rstrip(".") if raw_host.endswith(".") and raw_host != "." else raw_host
        try:
            host = name.encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise UrlRefused("host not IDNA", "The URL's host name is not valid.") from exc
        if not host or host.endswith("."):
            raise UrlRefused("empty host label", "The URL's host name is not valid.")
        literal = _numeric_ipv4(host)
        if literal is not None:
            host = str(literal)
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return ParsedUrl(
        scheme=scheme,
        host=host,
        port=port if port is not None else (443 if scheme == "https" else 80),
        target=target,
        literal=literal,
    )


def address_forbidden(address: IPAddress) -> bool:
    """True for every address that is not plain public unicast."""
    if isinstance(address, ipaddress.IPv6Address) and (
        address.ipv4_mapped or address.sixtofour or address.teredo
    ):
        return True
    return (
        not address.is_global
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or any(address in network for network in _FORBIDDEN_NETWORKS if network.version == address.version)
    )  # fmt: skip


def _allowlisted(address: IPAddress, policy: OutboundPolicy) -> bool:
    return any(
        address in network for network in policy.allowlist if network.version == address.version
    )


def system_resolve(host: str, port: int) -> Sequence[str]:
    """Every address the system resolver gives for ``host``."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _resolver() -> Resolver:
    path = str(settings.AGENTIDP["SSRF_RESOLVER"])
    return _import_resolver(path)


@cache
def _import_resolver(path: str) -> Resolver:
    resolver: Resolver = import_string(path)
    return resolver


def url_check(url: str | ParsedUrl) -> CheckedUrl:
    """Parse (unless already parsed), resolve and check ``url``; raise :class:`UrlRefused`."""
    parsed = url_parse(url) if isinstance(url, str) else url
    policy = outbound_policy()
    if parsed.literal is not None:
        addresses: tuple[IPAddress, ...] = (parsed.literal,)
    else:
        try:
            found = _resolver()(parsed.host, parsed.port)
        except (OSError, UnicodeError) as exc:
            raise UrlRefused("unresolvable", "The URL's host could not be resolved.") from exc
        try:
            addresses = tuple(ipaddress.ip_address(a.split("%", 1)[0]) for a in found)
        except ValueError as exc:
            raise UrlRefused("resolver answered a non-address") from exc
        if not addresses:
            raise UrlRefused("unresolvable", "The URL's host could not be resolved.")
    for address in addresses:
        if address_forbidden(address) and not _allowlisted(address, policy):
            raise UrlRefused(f"address {address}", policy.rules())
    # the allow list relaxes the address rule only
    if parsed.scheme != "https" and not policy.allow_http:
        raise UrlRefused("plain http", "The URL must use https.")
    if not policy.port_allowed(parsed.port):
        raise UrlRefused(f"port {parsed.port}", policy.rules())
    return CheckedUrl(url=parsed, addresses=addresses)


# --- sending ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """How long a request may take and how much of the answer is read."""

    connect_seconds: float
    total_seconds: float
    max_response_bytes: int


@dataclass(frozen=True)
class OutboundResponse:
    """What came back, or why nothing usable did (``error``: timeout, connection, too_large,
    refused)."""

    status: int | None
    headers: Mapping[str, str]
    body: bytes
    seconds: float
    error: str = ""
    detail: str = ""


Pool = HTTPConnectionPool | HTTPSConnectionPool
# Keep-alive connections by (scheme, checked address, port, host): a pool is only ever reused
# for the address the request was just checked against.
_pools: BoundedLRU[tuple[str, str, int, str], Pool] = BoundedLRU(max_entries=512)


def _pool(url: ParsedUrl, address: IPAddress, limits: Limits) -> Pool:
    key = (url.scheme, str(address), url.port, url.host)
    pool = _pools.get(key)
    if pool is None:
        timeout = Timeout(connect=limits.connect_seconds, read=limits.total_seconds)
        if url.scheme == "https":
            pool = HTTPSConnectionPool(
                str(address), url.port, timeout=timeout, maxsize=32, block=False, retries=False,
                server_hostname=url.host, assert_hostname=url.host, cert_reqs="CERT_REQUIRED",
            )  # fmt: skip
        else:
            pool = HTTPConnectionPool(
                str(address), url.port, timeout=timeout, maxsize=32, block=False, retries=False
            )
        _pools.put(key, pool)
    return pool


def document_limits() -> Limits:
    """The bounds on fetching a document of keys or metadata (a partner's, an agent's JWKS):
    ``FEDERATION_FETCH_TIMEOUT_SECONDS`` in all, ``FEDERATION_MAX_DOCUMENT_BYTES`` read."""
    timeout = float(settings.AGENTIDP["FEDERATION_FETCH_TIMEOUT_SECONDS"])
    return Limits(
        connect_seconds=min(timeout, 3.0),
        total_seconds=timeout,
        max_response_bytes=int(settings.AGENTIDP["FEDERATION_MAX_DOCUMENT_BYTES"]),
    )


def outbound_request(
    method: str,
    url: str | ParsedUrl,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    limits: Limits,
) -> OutboundResponse:
    """Check ``url`` now, then send one request to the first address that accepts a connection.

    Never raises for what the remote side does: a refusal by the guard, a timeout, a reset, an
    over-long answer all come back as an :class:`OutboundResponse` with ``error`` set.
    """
    started = time.monotonic()
    try:
        checked = url_check(url)
    except UrlRefused as refused:
        return OutboundResponse(None, {}, b"", 0.0, "refused", refused.reason)
    parsed = checked.url
    sent_headers = {"Host": parsed.host_header, "User-Agent": "AgentIdP", **(headers or {})}
    last = OutboundResponse(None, {}, b"", 0.0, "connection", "no address")
    for address in checked.addresses:
        last = _send(method, parsed, address, body, sent_headers, limits, started)
        if last.error != "connection":
            return last
    return last


def _send(
    method: str,
    url: ParsedUrl,
    address: IPAddress,
    body: bytes | None,
    headers: Mapping[str, str],
    limits: Limits,
    started: float,
) -> OutboundResponse:
    pool = _pool(url, address, limits)
    deadline = started + limits.total_seconds
    try:
        response = pool.urlopen(
            method, url.target, body=body, headers=dict(headers), redirect=False,
            retries=False, preload_content=False, assert_same_host=False,
            timeout=Timeout(connect=limits.connect_seconds, read=max(deadline - time.monotonic(), 0.01)),
        )  # fmt: skip
    except NewConnectionError as exc:  # refused or unreachable (urllib3 files it under timeouts)
        return OutboundResponse(None, {}, b"", time.monotonic() - started, "connection", type(exc).__name__)  # fmt: skip
    except Urllib3Timeout as exc:
        return OutboundResponse(
            None, {}, b"", time.monotonic() - started, "timeout", type(exc).__name__
        )
    except (Urllib3Error, OSError) as exc:
        return OutboundResponse(None, {}, b"", time.monotonic() - started, "connection", type(exc).__name__)  # fmt: skip
    chunks: list[bytes] = []
    size = 0
    error = ""
    try:
        for chunk in response.stream(16384, decode_content=False):
            chunks.append(chunk)
            size += len(chunk)
            if size > limits.max_response_bytes:
                error = "too_large"
                break
            if time.monotonic() > deadline:
                error = "timeout"
                break
    except Urllib3Timeout:
        error = "timeout"
    except (Urllib3Error, OSError):
        error = "connection"
    if error:
        response.close()  # the connection is not reused: the rest of the answer is unread
    response.release_conn()
    return OutboundResponse(
        status=response.status,
        headers={k.lower(): v for k, v in response.headers.items()},
        body=b"".join(chunks)[: limits.max_response_bytes],
        seconds=time.monotonic() - started,
        error=error,
    )
