"""A second, minimal OAuth/OIDC issuer for federation tests, built with libraries independent
of ours: pytest-httpserver serves its metadata and JWKS on 127.0.0.3, joserfc signs its tokens.
Only 127.0.0.3 is allowlisted for outbound requests, so every other loopback address stays
refused in the same run."""

import json
import re
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from agentidp.conf import agentidp_settings
from tests.webhooks.conftest import agentidp_override

ISSUER_HOST = "127.0.0.3"
Key = ECKey | RSAKey | OKPKey


@pytest.fixture(autouse=True)
def issuer_address_allowed() -> Iterator[None]:
    """Only the mini issuer's address is allowlisted; fetches time out after a second. Every
    ``settings.AGENTIDP`` key a test sets is put back after it (the dict is shared, and
    pytest-django's ``settings`` fixture restores attributes, not the items of one)."""
    saved = dict(settings.AGENTIDP)
    agentidp_override(
        SSRF_ALLOWLIST=[ISSUER_HOST],
        WEBHOOK_ALLOW_HTTP=True,
        SSRF_ALLOWED_PORTS=["443", "80", "1024-65535"],
        FEDERATION_FETCH_TIMEOUT_SECONDS=1.0,
        FEDERATION_LEEWAY_SECONDS=5,
    )
    yield
    settings.AGENTIDP.clear()
    settings.AGENTIDP.update(saved)


def new_key(kind: str = "EC", kid: str | None = None) -> Key:
    parameters: Any = {"kid": kid or uuid.uuid4().hex[:12]}
    if kind == "RSA":
        return RSAKey.generate_key(2048, parameters=parameters)
    if kind == "OKP":
        return OKPKey.generate_key("Ed25519", parameters=parameters)
    return ECKey.generate_key("P-256", parameters=parameters)


ALGORITHM = {"EC": "ES256", "RSA": "RS256", "OKP": "EdDSA"}


@dataclass
class MiniIssuer:
    """An issuer on its own server: metadata at /.well-known/openid-configuration, keys at
    /jwks. Tests change what it serves (``metadata``, ``jwks``, ``delay``, ``status``)."""

    server: HTTPServer
    keys: list[Key] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    jwks: bytes | None = None  # raw JWKS body, instead of the public keys
    did_document: dict[str, Any] | None = None
    delay: float = 0.0
    status: dict[str, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        return f"http://{ISSUER_HOST}:{self.server.port}"

    def handle(self, request: Request) -> Response:
        path = request.path
        self.hits[path] = self.hits.get(path, 0) + 1
        if self.delay:
            time.sleep(self.delay)
        if path in self.status:
            return Response("", status=self.status[path], headers={"Location": "http://x/"})
        if path == "/.well-known/openid-configuration":
            body = self.metadata or {
                "issuer": self.issuer,
                "jwks_uri": f"{self.issuer}/jwks",
                "token_endpoint": f"{self.issuer}/token",
            }
            return Response(json.dumps(body), content_type="application/json")
        if path == "/.well-known/did.json" and self.did_document is not None:
            return Response(json.dumps(self.did_document), content_type="application/did+json")
        if path == "/jwks":
            raw = (
                self.jwks
                or json.dumps({"keys": [k.as_dict(private=False) for k in self.keys]}).encode()
            )
            return Response(raw, content_type="application/json")
        return Response("not found", status=404)

    @property
    def did(self) -> str:
        return f"did:web:{ISSUER_HOST}%3A{self.server.port}"

    def publish_did(self, keys: list[Key] | None = None, did: str | None = None) -> None:
        """Serve a DID document listing ``keys`` (default: the issuer's) as its methods."""
        subject = did or self.did
        self.did_document = {
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": subject,
            "verificationMethod": [
                {"id": f"{subject}#{k.kid}", "type": "JsonWebKey2020", "controller": subject,
                 "publicKeyJwk": k.as_dict(private=False)}
                for k in (self.keys if keys is None else keys)
            ],
        }  # fmt: skip

    def token(
        self,
        claims: dict[str, Any] | None = None,
        *,
        key: Key | None = None,
        header: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> str:
        """A token of this issuer for the deployment under test (overrides win; None drops)."""
        key = key or self.keys[0]
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "remote-agent-1",
            "aud": agentidp_settings().issuer,
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "scope": "agents:read",
            **(claims or {}),
            **overrides,
        }
        body = {k: v for k, v in body.items() if v is not None}
        kind = str(key.as_dict()["kty"])
        head = {"alg": ALGORITHM[kind], "kid": key.kid, "typ": "at+jwt", **(header or {})}
        with warnings.catch_warnings():
            # joserfc prefers RFC 9864's Ed25519 name; EdDSA is what relying parties know
            warnings.filterwarnings("ignore", message="EdDSA is deprecated")
            return jwt.encode(head, body, key, algorithms=[head["alg"]])


@pytest.fixture(scope="session")
def issuer_server() -> Iterator[HTTPServer]:
    server = HTTPServer(host=ISSUER_HOST, port=0, threaded=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mini_issuer(issuer_server: HTTPServer) -> Iterator[MiniIssuer]:
    issuer_server.clear()
    issuer = MiniIssuer(server=issuer_server, keys=[new_key("EC", "ec-1")])
    issuer_server.expect_request(re.compile("^/")).respond_with_handler(issuer.handle)
    yield issuer
    issuer_server.clear()


@pytest.fixture
def register(api: Any, mini_issuer: MiniIssuer) -> Callable[..., dict[str, Any]]:
    """Register the mini issuer as a partner of ``org`` through the API (201 asserted)."""

    def make(**body: Any) -> dict[str, Any]:
        payload = {"issuer": mini_issuer.issuer, "allowed_scopes": ["agents:read"], **body}
        response = api.post("/federation/trust", payload, format="json")
        assert response.status_code == 201, response.content
        created: dict[str, Any] = response.json()
        return created

    return make
