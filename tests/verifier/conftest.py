"""A live AgentIdP for the verifier package's tests: the test server on a real port, its issuer
that server's URL, with two organizations' agents and registered resources committed so the
server's own connections see them. Tokens are obtained over HTTP, as a resource server's
clients obtain them."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from django.conf import settings
from django.test import override_settings

from agentidp.devenv import free_port
from agentidp.tenancy import tenant_context
from oidc.resources import grant_set, resource_create
from tests.factories import TEST_ACTOR, OrganizationFactory
from tests.oidc.conftest import Credentialed, credentialed

TOOLS = [
    {"name": "tools:call", "description": "Call the server's tools"},
    {"name": "tools:list", "description": "List the tools"},
]
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a token type URI


@dataclass
class Idp:
    """The live issuer, the MCP server's identifier registered by organization A, and agents:
    ``alice`` granted tools:call and tools:list, ``bob`` (same organization) tools:call,
    ``mallory`` of organization B with B's own resource ``other``."""

    issuer: str
    mcp: str
    other: str
    alice: Credentialed
    bob: Credentialed
    mallory: Credentialed

    def token(self, agent: Credentialed, **form: str) -> str:
        answer = self.token_answer(agent, None, **form)
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        return token

    def token_answer(
        self, agent: Credentialed, headers: dict[str, str] | None = None, **form: str
    ) -> requests.Response:
        return requests.post(
            f"{self.issuer}/oauth2/token",
            data={"grant_type": "client_credentials", **form},
            auth=(agent.client_id, agent.secret),
            headers=headers,
            timeout=10,
        )

    def exchange(self, actor: Credentialed, subject_token: str, **form: str) -> str:
        return self.token(
            actor, grant_type=EXCHANGE, subject_token=subject_token, subject_token_type=ACCESS,
            **form,
        )  # fmt: skip

    def revoke(self, agent: Credentialed, token: str) -> None:
        answer = requests.post(
            f"{self.issuer}/oauth2/revoke", data={"token": token},
            auth=(agent.client_id, agent.secret), timeout=10,
        )  # fmt: skip
        assert answer.status_code == 200, answer.text


def idp_seed(mcp: str, other: str) -> tuple[Credentialed, Credentialed, Credentialed]:
    """The organizations, agents, resources and grants of :class:`Idp`, committed."""
    first, second = OrganizationFactory(), OrganizationFactory()
    alice = credentialed(first, scopes=["agents:read", "openid"])
    bob = credentialed(first, scopes=["agents:read"])
    mallory = credentialed(second, scopes=["agents:read"])
    with tenant_context(first.id):
        resource = resource_create(
            actor=TEST_ACTOR, organization_id=first.id, identifier=mcp, name="Tools", scopes=TOOLS
        )
        for agent, scopes in ((alice, ["tools:call", "tools:list"]), (bob, ["tools:call"])):
            grant_set(
                actor=TEST_ACTOR, organization_id=first.id, resource_id=resource.id,
                agent_id=agent.agent.id, scopes=scopes,
            )  # fmt: skip
    with tenant_context(second.id):
        theirs = resource_create(
            actor=TEST_ACTOR, organization_id=second.id, identifier=other, name="B", scopes=TOOLS
        )
        grant_set(
            actor=TEST_ACTOR, organization_id=second.id, resource_id=theirs.id,
            agent_id=mallory.agent.id, scopes=["tools:call"],
        )  # fmt: skip
    return alice, bob, mallory


@pytest.fixture
def mcp_port() -> int:
    return free_port()


@pytest.fixture
def idp(live_server: Any, run_in_threads: Callable[..., list[Any]], mcp_port: int) -> Iterator[Idp]:
    issuer = live_server.url
    mcp, other = f"http://127.0.0.1:{mcp_port}/mcp", f"http://127.0.0.1:{mcp_port}/other"
    overrides = {"ISSUER": issuer, "RESOURCE_ALLOW_LOOPBACK_HTTP": True}
    with override_settings(AGENTIDP={**settings.AGENTIDP, **overrides}):
        (seeded,) = run_in_threads(lambda: idp_seed(mcp, other))
        assert isinstance(seeded, tuple), seeded
        yield Idp(issuer, mcp, other, *seeded)
