"""Agents with credentials, and helpers to ask for tokens the way a client would."""

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext

from agentidp.tenancy import tenant_context
from agents.models import Agent
from credentials.services import client_scopes_set, credential_generate
from organizations.models import Organization
from tests.factories import TEST_ACTOR, AgentFactory

FORM = "application/x-www-form-urlencoded"


def statements(queries: CaptureQueriesContext) -> list[str]:
    """The captured SQL without the request's transaction control (BEGIN and COMMIT, or the
    savepoint standing in for them inside a test's transaction)."""
    control = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")
    return [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(control)]


@dataclass
class Credentialed:
    agent: Agent
    client_id: str
    secret: str
    credential_id: Any


def credentialed(
    organization: Organization, scopes: list[str] | None = None, **kw: Any
) -> Credentialed:
    agent = AgentFactory(organization=organization, **kw)
    with tenant_context(organization.id):
        issued = credential_generate(
            actor=TEST_ACTOR, organization_id=organization.id, agent_id=agent.id
        )
        client_scopes_set(
            actor=TEST_ACTOR,
            organization_id=organization.id,
            agent_id=agent.id,
            scopes=scopes if scopes is not None else ["agents:read", "agents:write"],
        )
    return Credentialed(agent, issued.client_id, issued.secret, issued.credential.id)


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def request_token(c: Credentialed | None = None, *, auth: str | None = None, **params: Any) -> Any:
    """POST /oauth2/token as OAuth clients do (RFC 6749: a urlencoded form)."""
    data = {"grant_type": "client_credentials", **params}
    if auth is None and c is not None:
        auth = basic(c.client_id, c.secret)
    headers = {"Authorization": auth} if auth is not None else {}
    return HttpClient().post("/oauth2/token", urlencode(data, doseq=True), FORM, headers=headers)


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    def part(segment: str) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(
            base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        )
        return value

    header, payload, _ = token.split(".")
    return part(header), part(payload)


@pytest.fixture
def token_for() -> Callable[..., str]:
    def issue(c: Credentialed, **params: Any) -> str:
        response = request_token(c, **params)
        assert response.status_code == 200, response.content
        token: str = response.json()["access_token"]
        return token

    return issue


# --- token exchange (RFC 8693) between agents ------------------------------------------------

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
DELEGATION_SCOPES = ["agents:read", "agents:write", "credentials:write"]


@pytest.fixture
def trio(org: Organization) -> tuple[Credentialed, Credentialed, Credentialed]:
    """An orchestrator and two sub-agents, each able to hold the same scopes."""
    scopes = DELEGATION_SCOPES
    return credentialed(org, scopes), credentialed(org, scopes), credentialed(org, scopes)


def agent_token(agent: Credentialed, scope: str = "agents:read agents:write") -> str:
    """The agent's own token (client_credentials, as OAuth clients send it)."""
    response = request_token(agent, scope=scope)
    assert response.status_code == 200, response.content
    token: str = response.json()["access_token"]
    return token


def exchange(
    actor: Credentialed, subject_token: str, *, lean_form: bool = True, **extra: str
) -> Any:
    """``actor`` exchanges ``subject_token`` as OAuth clients send it (a urlencoded form: the
    lean path's), or as a multipart body (which only the full path reads)."""
    data = {"grant_type": EXCHANGE, "subject_token": subject_token,
            "subject_token_type": ACCESS, **extra}  # fmt: skip
    auth = basic(actor.client_id, actor.secret)
    if lean_form:
        return HttpClient().post("/oauth2/token", urlencode(data), FORM, HTTP_AUTHORIZATION=auth)
    return HttpClient().post("/oauth2/token", data, HTTP_AUTHORIZATION=auth)


def claims(token: str) -> dict[str, Any]:
    return jwt_parts(token)[1]


def refused(response: Any, error: str, reason: str) -> None:
    """An RFC 6749 5.2 refusal whose description starts with its audited reason."""
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == error, body
    assert body["error_description"].startswith(f"{reason}:"), body
