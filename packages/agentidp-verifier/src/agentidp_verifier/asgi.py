"""ASGI middleware: every HTTP request to the wrapped app must carry an AgentIdP access token.

>>> app = AgentIdPMiddleware(app, Verifier(ISSUER, "https://api.example.com/orders"),
...                          required_scopes=["orders:read"])

The accepted token is ``scope["state"]["agentidp_token"]`` (Starlette's ``request.state``), a
:class:`~agentidp_verifier.VerifiedToken`. Refusals are answered here: 401 with the RFC 6750 /
RFC 9449 challenges (``resource_metadata`` naming this resource's RFC 9728 document), 403 for
missing scopes, 400 for a malformed header, 503 when the issuer cannot be reached. The RFC 9728
document itself is served at ``/.well-known/oauth-protected-resource`` followed by the
resource's path. Pure ASGI: no framework needed.
"""

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from urllib.parse import urlsplit

from agentidp_verifier.errors import TokenRejected, VerifierUnavailable
from agentidp_verifier.verifier import Verifier

Scope = MutableMapping[str, object]
Message = MutableMapping[str, object]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def metadata_path(resource: str) -> str:
    """Where RFC 9728 3.1 puts a resource's metadata: the well-known path, then the resource's."""
    return WELL_KNOWN + urlsplit(resource).path.rstrip("/")


class AgentIdPMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        verifier: Verifier,
        *,
        required_scopes: Iterable[str] = (),
        exempt_paths: Iterable[str] = (),
        public_url: str | None = None,
        serve_metadata: bool = True,
    ) -> None:
        """``public_url`` is the scheme and host clients use (behind a proxy), against which
        DPoP proofs' ``htu`` is checked; else the request's own ``Host``."""
        self.app = app
        self.verifier = verifier
        self.required_scopes = tuple(required_scopes)
        self.exempt_paths = tuple(exempt_paths)
        self.public_url = public_url.rstrip("/") if public_url else None
        self.metadata_path = metadata_path(verifier.audience) if serve_metadata else None
        if serve_metadata and verifier.resource_metadata is None:
            base = (
                self.public_url
                or f"{urlsplit(verifier.audience).scheme}://{urlsplit(verifier.audience).netloc}"
            )
            verifier.resource_metadata = base + metadata_path(verifier.audience)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        if self.metadata_path is not None and path == self.metadata_path:
            document = self.verifier.protected_resource_metadata()
            await _answer(scope, send, 200, document, [(b"cache-control", b"public, max-age=300")])
            return
        if any(path.startswith(prefix) for prefix in self.exempt_paths):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        try:
            token = await self.verifier.averify_request(
                headers.get("authorization"),
                dpop_proof=headers.get("dpop"),
                method=str(scope.get("method", "GET")),
                url=self._url(scope, headers),
                required_scopes=self.required_scopes,
            )
        except TokenRejected as rejected:
            challenges = [(b"www-authenticate", value.encode()) for value in self.verifier.challenges(rejected)]  # fmt: skip
            body = {"error": rejected.error or "invalid_token", "error_description": rejected.description}  # fmt: skip
            await _answer(scope, send, rejected.status, body, challenges)
            return
        except VerifierUnavailable:
            body = {"error": "temporarily_unavailable", "error_description": "the authorization server cannot be reached"}  # fmt: skip
            await _answer(scope, send, 503, body, [(b"retry-after", b"5")])
            return
        state = scope.setdefault("state", {})
        if isinstance(state, MutableMapping):
            state["agentidp_token"] = token
        await self.app(scope, receive, send)

    def _url(self, scope: Scope, headers: dict[str, str]) -> str:
        path = f"{scope.get('root_path', '')}{scope.get('path', '')}"
        if self.public_url:
            return self.public_url + path
        scheme = {"ws": "http", "wss": "https"}.get(str(scope.get("scheme")), str(scope.get("scheme", "http")))  # fmt: skip
        return f"{scheme}://{headers.get('host', '')}{path}"


def _headers(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    raw = scope.get("headers", [])
    for pair in raw if isinstance(raw, list | tuple) else []:
        name, value = pair
        if isinstance(name, bytes) and isinstance(value, bytes):
            found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found


async def _answer(
    scope: Scope,
    send: Send,
    status: int,
    body: Mapping[str, object],
    headers: list[tuple[bytes, bytes]],
) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    payload = json.dumps(body).encode()
    # refusals are never cached; the metadata document passes its own Cache-Control
    fixed = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if status != 200:
        fixed.append((b"cache-control", b"no-store"))
    await send({"type": "http.response.start", "status": status, "headers": [*fixed, *headers]})
    await send({"type": "http.response.body", "body": payload})
