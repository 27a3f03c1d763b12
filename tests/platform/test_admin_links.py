"""No link the admin shows leads to a 403 (or a 404, or an error): every role follows every
link it is shown, from the index down, over an organization with something in every table."""

import re
from collections import Counter, deque
from collections.abc import Iterator
from html import unescape
from urllib.parse import urljoin, urlsplit

import pytest
from django.contrib.auth.models import User
from django.test import Client

from agentidp.tenancy import tenant_context
from agents.models import Agent
from agents.services import agent_suspend
from organizations.choices import MemberRole
from organizations.models import Organization
from tests.factories import TEST_ACTOR, StaffFactory
from tests.federation.conftest import ISSUER_HOST, MiniIssuer, issuer_server, mini_issuer
from tests.federation.test_exchange import exchange, granted
from tests.oidc.conftest import credentialed, request_token
from tests.platform.test_admin import _login
from tests.webhooks.conftest import (
    RECEIVER_HOST,
    Receiver,
    agentidp_override,
    receiver,
    receiver_server,
    subscribe,
)
from webhooks.delivery import deliveries_send
from webhooks.relay import relay_run

__all__ = ["issuer_server", "mini_issuer", "receiver", "receiver_server"]  # fixtures used here

MAX_PAGES = 1000
# Pages of one kind (every agent's page, a list's filter and sort links): a few of each, not
# every combination.
VARIANTS_PER_SHAPE = 3
ID_SEGMENT = re.compile(r"/(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d+)/")
HREF = re.compile(r'href="([^"#]+)"')


def _crawl(client: Client, *starts: str) -> tuple[dict[str, int], int]:
    """Every admin page reachable by links from the index (and ``starts``): each URL and its
    status."""
    seen: dict[str, int] = {}
    variants: Counter[str] = Counter()
    queue = deque(["/admin/", *starts])
    while queue and len(seen) < MAX_PAGES:
        url = queue.popleft()
        if url in seen:
            continue
        response = client.get(url)
        seen[url] = response.status_code
        if response.status_code != 200 or "html" not in response.get("Content-Type", ""):
            continue
        for href in HREF.findall(response.content.decode()):
            target = urljoin(url, unescape(href))
            parts = urlsplit(target)
            if parts.netloc or not parts.path.startswith("/admin/"):
                continue  # the landing page, docs and the API are not the admin's pages
            if parts.path.startswith(("/admin/logout/", "/admin/jsi18n/")):
                continue
            shape = ID_SEGMENT.sub("/{id}/", parts.path) + ("?" if parts.query else "")
            if target in seen or target in queue or variants[shape] >= VARIANTS_PER_SHAPE:
                continue
            variants[shape] += 1
            queue.append(target)
    return seen, len(queue)


@pytest.fixture(autouse=True)
def _receiver_and_issuer_allowed() -> Iterator[None]:
    restore = agentidp_override(
        SSRF_ALLOWLIST=[RECEIVER_HOST, ISSUER_HOST], WEBHOOK_ALLOW_HTTP=True,
        SSRF_ALLOWED_PORTS=["443", "80", "1024-65535"], FEDERATION_FETCH_TIMEOUT_SECONDS=1.0,
    )  # fmt: skip
    yield
    restore()


@pytest.fixture
def populated(org: Organization, receiver: Receiver, mini_issuer: MiniIssuer) -> Organization:
    """Agents (one suspended) with secrets and tokens, a subscription with deliveries, a
    partner with an exchanged token, people of every role."""
    cred = credentialed(org)
    request_token(cred)
    suspended = credentialed(org)
    with tenant_context(org.id):
        agent_suspend(actor=TEST_ACTOR, organization_id=org.id, agent_id=suspended.agent.id)
    subscribe(org, receiver, ["*"])
    relay_run(organization_id=org.id)
    deliveries_send(organization_id=org.id)
    for role in MemberRole.values:
        StaffFactory(organization=org, role=role)
    owner = _login(StaffFactory(organization=org, role=MemberRole.OWNER))
    registered = owner.post(
        "/admin/federation/federationpartner/add/",
        {"issuer": mini_issuer.issuer, "jwks_uri": "", "did": "", "allowed_organizations": "",
         "allowed_scopes": ["agents:read"], "read_only": "on", "expires_at_0": "",
         "expires_at_1": "", "notes": ""},
    )  # fmt: skip
    assert registered.status_code == 302
    granted(exchange(mini_issuer.token()))
    return org


@pytest.mark.parametrize("role", [*MemberRole.values, "platform"])
def test_every_link_shown_opens(role: str, populated: Organization, superuser: User) -> None:
    user = superuser if role == "platform" else StaffFactory(organization=populated, role=role)
    # Platform staff see every organization's agents (other tests' too): they filter to this one,
    # as they would.
    starts = (
        [f"/admin/agents/agent/?organization__id__exact={populated.id}"]
        if role == "platform"
        else []
    )
    pages, unvisited = _crawl(_login(user), *starts)
    broken = {url: status for url, status in pages.items() if status not in {200, 302}}
    assert broken == {}, broken
    assert unvisited == 0, (
        f"more than {MAX_PAGES} pages",
        Counter(ID_SEGMENT.sub("/{id}/", urlsplit(u).path) for u in pages).most_common(30),
    )
    opened = {urlsplit(url).path for url, status in pages.items() if status == 200}
    with tenant_context(populated.id):
        agent = Agent.objects.filter(organization_id=populated.id, status="active").first()
    assert agent is not None
    assert f"/admin/agents/agent/{agent.id}/change/" in opened  # every role reads the agents
    if role in {MemberRole.OWNER, MemberRole.ADMIN, "platform"}:
        assert f"/admin/agents/agent/{agent.id}/suspend/" in opened
        assert "/admin/organizations/staffmembership/add/" in opened
    else:
        assert not any(p.endswith(("/add/", "/suspend/", "/delete/", "/remove/")) for p in opened)
    if role == MemberRole.MEMBER:
        assert not any(p.startswith("/admin/compliance/") for p in opened)
    else:
        assert "/admin/compliance/auditevent/" in opened
