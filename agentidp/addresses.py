"""Who is on the other end of a request: the client's address, believed from ``X-Forwarded-For``
only as far as the connection's own peer and the hops it names are trusted proxies
(``AGENTIDP_TRUSTED_PROXIES``), the same list that decides whether ``X-Forwarded-Proto`` counts.

Throttles key on :func:`throttle_key`: an IPv4 address, or the /64 an IPv6 address belongs to
(one host is routinely given a whole /64, so a single address would be a free key per attempt).
"""

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def _trusted() -> frozenset[str]:
    return frozenset(str(proxy) for proxy in settings.TRUSTED_PROXIES)


def client_address(request: HttpRequest) -> str:
    """The address of the client the request is from: the connection's peer, or, when that
    is a trusted proxy, the rightmost address in ``X-Forwarded-For`` that is not one."""
    peer = str(request.META.get("REMOTE_ADDR") or "")
    trusted = _trusted()
    if peer not in trusted:
        return peer
    forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR") or "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return peer


def throttle_key(address: str) -> str:
    """The key failures from ``address`` are counted under (``unknown`` when it is none)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return "unknown"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{parsed}/64", strict=False))
    return str(parsed)
