"""The verifier's adapters, each in front of a real server: an MCP server built with the official
``mcp`` SDK and an ASGI app, both served by uvicorn on the port registered as the resource, and
a Django view; every request goes over HTTP with a token from the live AgentIdP."""

import base64
import json
import threading
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import anyio
import httpx2
import requests
import uvicorn
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import RequestFactory, override_settings
from joserfc.jwk import ECKey
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentidp.devenv import free_port
from agentidp_verifier import Verifier
from agentidp_verifier.asgi import AgentIdPMiddleware as AsgiMiddleware
from agentidp_verifier.django import AgentIdPMiddleware as DjangoMiddleware
from agentidp_verifier.django import token_required
from agentidp_verifier.mcp import AgentIdPTokenVerifier
from tests.verifier.conftest import Idp
from tests.verifier.test_verifier import _proof, bound_token


@contextmanager
def serving(app: Any, port: int) -> Iterator[None]:
    """``app`` served by uvicorn on 127.0.0.1:``port`` until the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def mcp_server(idp: Idp) -> MCPServer:
    """An MCP server as its README would have it: AgentIdP named as the authorization server,
    the verifier as the SDK's TokenVerifier, one tool that says who called it."""
    server = MCPServer(
        "orders",
        token_verifier=AgentIdPTokenVerifier(Verifier(idp.issuer, idp.mcp)),
        auth=AuthSettings(
            issuer_url=AnyHttpUrl(idp.issuer),
            resource_server_url=AnyHttpUrl(idp.mcp),
            required_scopes=["tools:call"],
            validate_token_resource=True,
        ),  # fmt: skip
    )

    @server.tool()
    def whoami() -> str:
        token = get_access_token()
        assert token is not None
        acting = (token.claims or {}).get("act", {}).get("sub", "")
        return f"{token.subject} {token.client_id} {acting}".strip()

    return server


async def mcp_call(url: str, token: str) -> tuple[list[str], str]:
    """The SDK's own client: initialize, list the tools, call one."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                result = await session.call_tool("whoami", {})
                text = getattr(result.content[0], "text", "")
                return [tool.name for tool in tools.tools], str(text)


def test_an_mcp_server_protected_by_agentidp(idp: Idp, mcp_port: int) -> None:
    with serving(mcp_server(idp).streamable_http_app(), mcp_port):
        # Discovery as an MCP client does it: the server's RFC 9728 metadata names AgentIdP.
        base = f"http://127.0.0.1:{mcp_port}"
        unauthenticated = requests.post(idp.mcp, json={}, timeout=10)
        assert unauthenticated.status_code == 401
        assert "resource_metadata=" in unauthenticated.headers["WWW-Authenticate"]
        metadata = requests.get(
            f"{base}/.well-known/oauth-protected-resource/mcp", timeout=10
        ).json()
        assert metadata["resource"] == idp.mcp
        assert [server.rstrip("/") for server in metadata["authorization_servers"]] == [idp.issuer]
        issuer = requests.get(f"{idp.issuer}/.well-known/oauth-authorization-server", timeout=10)
        assert issuer.json()["issuer"] == idp.issuer

        token = idp.token(idp.alice, resource=idp.mcp, scope="tools:call")
        tools, caller = anyio.run(mcp_call, idp.mcp, token)
        assert tools == ["whoami"]
        assert caller == f"{idp.alice.agent.id} {idp.alice.client_id}"

        # A token bob obtained by exchanging alice's: alice is the subject, bob the client
        # presenting it and the actor in its chain.
        delegated = idp.exchange(idp.bob, token, resource=idp.mcp)
        _, caller = anyio.run(mcp_call, idp.mcp, delegated)
        assert caller == f"{idp.alice.agent.id} {idp.bob.client_id} {idp.bob.agent.id}"

        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}  # fmt: skip
        headers = {"Accept": "application/json, text/event-stream"}
        refused = {
            "another organization's resource": idp.token(idp.mallory, resource=idp.other),
            "the platform API": idp.token(idp.alice, scope="agents:read"),
            "a DPoP-bound token as bearer": bound_token(idp, ECKey.generate_key("P-256")),
            "without the required scope": idp.token(idp.alice, resource=idp.mcp, scope="tools:list"),
            "a tampered token": token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
        }  # fmt: skip
        for name, bad in refused.items():
            answer = requests.post(
                idp.mcp, json=initialize, timeout=10,
                headers={**headers, "Authorization": f"Bearer {bad}"},
            )  # fmt: skip
            assert answer.status_code in (401, 403), (name, answer.status_code, answer.text)


async def asgi_whoami(request: Request) -> JSONResponse:
    token = request.state.agentidp_token
    return JSONResponse({"sub": token.subject, "scopes": sorted(token.scopes)})


def test_asgi_middleware_in_front_of_a_starlette_app(idp: Idp, mcp_port: int) -> None:
    verifier = Verifier(idp.issuer, idp.mcp)
    app = Starlette(routes=[Route("/mcp/whoami", asgi_whoami, methods=["GET", "POST"])])
    protected = AsgiMiddleware(app, verifier, required_scopes=["tools:call"])
    url = f"{idp.mcp}/whoami"
    with serving(protected, mcp_port):
        missing = requests.get(url, timeout=10)
        assert missing.status_code == 401
        challenge = missing.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer ") and "error=" not in challenge.split(", DPoP")[0]
        assert (
            f'resource_metadata="http://127.0.0.1:{mcp_port}/.well-known/oauth-protected-resource/mcp"'
            in challenge
        )
        metadata = requests.get(f"http://127.0.0.1:{mcp_port}/.well-known/oauth-protected-resource/mcp", timeout=10)  # fmt: skip
        assert metadata.json()["authorization_servers"] == [idp.issuer]

        token = idp.token(idp.alice, resource=idp.mcp)
        answer = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"sub": str(idp.alice.agent.id), "scopes": ["tools:call", "tools:list"]}  # fmt: skip

        narrow = idp.token(idp.alice, resource=idp.mcp, scope="tools:list")
        answer = requests.get(url, headers={"Authorization": f"Bearer {narrow}"}, timeout=10)
        assert answer.status_code == 403 and answer.json()["error"] == "insufficient_scope"
        theirs = idp.token(idp.mallory, resource=idp.other)
        answer = requests.get(url, headers={"Authorization": f"Bearer {theirs}"}, timeout=10)
        assert (
            answer.status_code == 401
            and 'error="invalid_token"' in answer.headers["WWW-Authenticate"]
        )
        malformed = requests.get(url, headers={"Authorization": "Bearer a b"}, timeout=10)
        assert malformed.status_code == 400 and malformed.json()["error"] == "invalid_request"

        # DPoP: the proof names the URL the client called; the middleware checks it.
        key = ECKey.generate_key("P-256")
        bound = bound_token(idp, key)
        dpop = {"Authorization": f"DPoP {bound}", "DPoP": _proof(key, "POST", url, token=bound)}
        assert requests.post(url, headers=dpop, timeout=10).status_code == 200
        replayed = requests.post(url, headers=dpop, timeout=10)
        assert replayed.status_code == 401
        assert 'DPoP error="invalid_dpop_proof"' in replayed.headers["WWW-Authenticate"]


def test_django_middleware_and_decorator(idp: Idp) -> None:
    @token_required("tools:call")
    def view(request: HttpRequest) -> HttpResponse:
        token = request.agentidp_token  # type: ignore[attr-defined]
        return JsonResponse({"sub": token.subject})

    def unprotected(request: HttpRequest) -> HttpResponse:
        return JsonResponse({"token": request.agentidp_token is not None})  # type: ignore[attr-defined]

    config = {"issuer": idp.issuer, "audience": idp.mcp, "leeway": 5}
    factory = RequestFactory()
    with override_settings(AGENTIDP_VERIFIER=config):
        protected, open_view = DjangoMiddleware(view), DjangoMiddleware(unprotected)
        token = idp.token(idp.bob, resource=idp.mcp)
        answer = protected(factory.get("/mcp/x", HTTP_AUTHORIZATION=f"Bearer {token}"))
        assert answer.status_code == 200 and json.loads(answer.content) == {
            "sub": str(idp.bob.agent.id)
        }

        missing = protected(factory.get("/mcp/x"))
        assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")
        assert json.loads(open_view(factory.get("/x")).content) == {"token": False}
        narrow = idp.token(idp.alice, resource=idp.mcp, scope="tools:list")
        answer = protected(factory.get("/mcp/x", HTTP_AUTHORIZATION=f"Bearer {narrow}"))
        assert (
            answer.status_code == 403 and 'error="insufficient_scope"' in answer["WWW-Authenticate"]
        )
        theirs = idp.token(idp.mallory, resource=idp.other)
        answer = open_view(factory.get("/x", HTTP_AUTHORIZATION=f"Bearer {theirs}"))
        assert answer.status_code == 401 and json.loads(answer.content)["error"] == "invalid_token"
        # Another scheme is the view's business.
        assert open_view(factory.get("/x", HTTP_AUTHORIZATION="Basic eDp5")).status_code == 200

    with override_settings(AGENTIDP_VERIFIER={"issuer": "http://127.0.0.1:9", "audience": idp.mcp}):
        answer = DjangoMiddleware(view)(factory.get("/mcp/x", HTTP_AUTHORIZATION=f"Bearer {token}"))
        assert answer.status_code == 503 and answer["Retry-After"]


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def test_asgi_middleware_with_the_issuer_down_exempt_paths_and_websockets() -> None:
    """An issuer that cannot be reached is 503 with Retry-After, not 401: the token may be
    good. Exempt paths pass without a token; a websocket without one is closed (1008)."""
    port, dead = free_port(), free_port()
    verifier = Verifier(f"http://127.0.0.1:{dead}", f"http://127.0.0.1:{port}/api")
    app = Starlette(routes=[Route("/api/x", health), Route("/health", health)])
    with serving(AsgiMiddleware(app, verifier, exempt_paths=["/health"]), port):
        base = f"http://127.0.0.1:{port}"
        down = requests.get(f"{base}/api/x", headers={"Authorization": "Bearer a.b.c"}, timeout=10)
        assert down.status_code == 401  # malformed before any fetch
        token = (
            ".".join(
                base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
                for part in ({"alg": "ES256", "typ": "at+jwt", "kid": "k"}, {"sub": "x"})
            )
            + ".c2ln"
        )
        down = requests.get(
            f"{base}/api/x", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert down.status_code == 503 and down.headers["Retry-After"] == "5"
        assert down.json()["error"] == "temporarily_unavailable"
        assert requests.get(f"{base}/health", timeout=10).json() == {"ok": True}

    # A websocket handshake without a token never reaches the app: the middleware closes it.
    sent: list[MutableMapping[str, object]] = []

    async def receive() -> MutableMapping[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: MutableMapping[str, object]) -> None:
        sent.append(message)

    scope: MutableMapping[str, object] = {"type": "websocket", "path": "/api/ws", "headers": [], "scheme": "ws"}  # fmt: skip
    anyio.run(AsgiMiddleware(app, verifier), scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]
