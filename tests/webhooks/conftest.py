"""Receivers for webhook tests: real HTTP servers on 127.0.0.2 that verify every signature with
the ``standardwebhooks`` library, and settings that allow exactly that one address."""

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook, WebhookVerificationError
from werkzeug import Request, Response

from agentidp.tenancy import tenant_context
from organizations.models import Organization
from tests.factories import TEST_ACTOR
from tests.oidc.conftest import token_for  # noqa: F401 - a fixture these tests use
from webhooks.services import IssuedSecret, subscription_create

RECEIVER_HOST = "127.0.0.2"


def agentidp_override(**values: Any) -> Callable[[], None]:
    """Set ``settings.AGENTIDP`` keys; returns the function that puts them back."""
    saved = {key: settings.AGENTIDP.get(key) for key in values}
    settings.AGENTIDP.update(values)

    def restore() -> None:
        settings.AGENTIDP.update(saved)

    return restore


@pytest.fixture(autouse=True)
def receiver_address_allowed() -> Iterator[None]:
    """Only 127.0.0.2 is allowlisted: every spelling of 127.0.0.1 stays refused in the same run
    (the receivers speak plain http on a free port, as make run allows). Retries are compressed
    to tens of milliseconds, without jitter."""
    restore = agentidp_override(
        SSRF_ALLOWLIST=[RECEIVER_HOST],
        WEBHOOK_ALLOW_HTTP=True,
        SSRF_ALLOWED_PORTS=["443", "80", "1024-65535"],
        WEBHOOK_RETRY_SCHEDULE=[0.01, 0.01, 0.01],
        WEBHOOK_RETRY_JITTER=0.0,
        WEBHOOK_TIMEOUT=2.0,
        WEBHOOK_CONNECT_TIMEOUT=1.0,
    )
    yield
    restore()


@dataclass
class Received:
    """One request a receiver got, and whether each known secret verified it."""

    headers: dict[str, str]
    body: bytes
    verified_by: list[str]

    @property
    def payload(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


@dataclass
class Receiver:
    """A live HTTP server answering with the next scripted status (then ``default``)."""

    server: HTTPServer
    secrets: list[str] = field(default_factory=list)
    script: list[Callable[[Request], Response] | int] = field(default_factory=list)
    default: int = 200
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{RECEIVER_HOST}:{self.server.port}/hook"

    def handle(self, request: Request) -> Response:
        body = request.get_data()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = []
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
                verified.append(secret)
            except WebhookVerificationError:
                pass
            except ValueError:  # signed, but not JSON (a Security Event Token): checked by its test
                pass
        with self.lock:
            self.received.append(Received(headers=headers, body=body, verified_by=verified))
            step = self.script.pop(0) if self.script else self.default
        if callable(step):
            return step(request)
        return Response("ok" if step < 300 else "no", status=step)

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.received]


@pytest.fixture(scope="session")
def receiver_server() -> Iterator[HTTPServer]:
    """One live server for the session (stopping one takes half a second); each test gets a
    fresh :class:`Receiver` behind it."""
    server = HTTPServer(host=RECEIVER_HOST, port=0, threaded=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def receiver(receiver_server: HTTPServer) -> Iterator[Receiver]:
    receiver_server.clear()
    receiver = Receiver(server=receiver_server)
    receiver_server.expect_request("/hook", method="POST").respond_with_handler(receiver.handle)
    yield receiver
    receiver_server.clear()


def subscribe(
    organization: Organization, receiver: Receiver, event_types: list[str] | None = None, **kw: Any
) -> IssuedSecret:
    """A subscription of ``organization`` to ``receiver``; the receiver learns its secret."""
    with tenant_context(organization.id):
        issued = subscription_create(
            actor=TEST_ACTOR,
            organization_id=organization.id,
            url=receiver.url,
            event_types=event_types or ["*"],
            **kw,
        )
    receiver.secrets.append(issued.secret)
    return issued
