"""did:web identifiers and the HTTPS URLs they resolve to (the W3C did:web method).

``did:web:<host>[%3A<port>][:<path segment>...]``: a port's colon is percent-encoded, a path's
slashes become colons, and a resolver fetches ``https://<host>[:<port>]/<path>/did.json``, or
``https://<host>[:<port>]/.well-known/did.json`` when there is no path.
"""

import re
import uuid
from urllib.parse import quote, unquote, urlsplit

from agentidp.conf import agentidp_settings

PREFIX = "did:web:"
# host[:port], then path segments; each part percent-encoded, no empty segment.
_PART = r"(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})+"
_DID = re.compile(rf"^did:web:{_PART}(?::{_PART})*$")


class InvalidDid(ValueError):
    """Not a did:web identifier this deployment can interpret."""


def did_for_url(base: str, *segments: str) -> str:
    """The did:web DID of ``base`` (an http(s) URL) extended by ``segments``."""
    parts = urlsplit(base)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidDid(f"not an http(s) URL with a host: {base!r}")
    host = parts.hostname.encode("idna").decode("ascii").lower()
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    path = [segment for segment in parts.path.split("/") if segment]
    encoded = [quote(host, safe="")] + [quote(s, safe="") for s in [*path, *segments]]
    return PREFIX + ":".join(encoded)


def url_for_did(did: str) -> str:
    """The HTTPS URL a did:web resolver fetches ``did``'s document from."""
    if not _DID.fullmatch(did):
        raise InvalidDid(f"not a did:web identifier: {did[:200]!r}")
    host, *path = (unquote(part) for part in did[len(PREFIX) :].split(":"))
    if "/" in host or any("/" in segment or not segment for segment in path):
        raise InvalidDid(f"not a did:web identifier: {did[:200]!r}")
    if not path:
        return f"https://{host}/.well-known/did.json"
    return f"https://{host}/{'/'.join(quote(segment, safe='') for segment in path)}/did.json"


def instance_did() -> str:
    """This deployment's DID, from ``AGENTIDP_ISSUER``."""
    return did_for_url(agentidp_settings().issuer)


def agent_did(agent_id: uuid.UUID) -> str:
    """An agent's DID: its document is at ``<issuer>/agents/<id>/did.json``."""
    return did_for_url(agentidp_settings().issuer, "agents", str(agent_id))


def agent_id_of(did: str) -> uuid.UUID:
    """The agent id of one of this deployment's agent DIDs; :class:`InvalidDid` otherwise
    (another host, another path, not a UUID)."""
    prefix = instance_did() + ":agents:"
    if not did.startswith(prefix):
        raise InvalidDid("not an agent DID of this deployment")
    try:
        return uuid.UUID(did[len(prefix) :])
    except ValueError as exc:
        raise InvalidDid("not an agent DID of this deployment") from exc
