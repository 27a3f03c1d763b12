"""The webhooks API over HTTP: subscriptions, their one-time secret, deliveries, test pings,
redelivery and rotation; every endpoint's 401, 403 and other-organization 404."""

import base64
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.test import APIClient

from agentidp.secrets import SecretNotFound, secret_store
from agentidp.tenancy import tenant_context
from compliance.models import AuditEvent
from organizations.choices import MemberRole
from organizations.models import Organization
from tests.factories import AgentFactory, OrganizationFactory, StaffFactory
from tests.oidc.conftest import credentialed
from tests.webhooks.conftest import Receiver
from webhooks.delivery import deliveries_send
from webhooks.models import WebhookSubscription
from webhooks.relay import relay_run
from webhooks.services import MAX_SUBSCRIPTIONS, secret_path


def _create(api: APIClient, receiver: Receiver, **body: Any) -> dict[str, Any]:
    payload = {"url": receiver.url, "event_types": ["agent.*"], **body}
    response = api.post("/webhooks", payload, format="json")
    assert response.status_code == 201, response.content
    created: dict[str, Any] = response.json()
    receiver.secrets.append(created["secret"])
    return created


def test_create_shows_the_secret_once_and_keeps_only_a_reference(
    api: APIClient, org: Organization, receiver: Receiver
) -> None:
    created = _create(api, receiver, description="ops", rate_limit=50)
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    subscription = created["subscription"]
    assert subscription["event_types"] == ["agent.*"] and subscription["active"] is True
    assert subscription["rate_limit"] == 50 and subscription["description"] == "ops"
    fetched = api.get(f"/webhooks/{subscription['id']}")
    assert fetched.status_code == 200
    assert secret not in fetched.content.decode()
    assert secret not in api.get("/webhooks").content.decode()
    with tenant_context(org.id):
        stored = WebhookSubscription.objects.get(id=subscription["id"])
        audit = AuditEvent.objects.get(organization_id=org.id, action="webhook.created")
        path = secret_path(stored)
    assert path.startswith(f"orgs/{org.id}/webhooks/") and path not in stored.secret_ref
    assert secret_store().read(path) == {"value": secret}
    assert secret not in str(audit.data)
    # nothing in the database holds it: the whole row read with raw SQL
    with tenant_context(org.id), connection.cursor() as cursor:
        cursor.execute(
            "SELECT row_to_json(s)::text FROM webhooks_webhooksubscription s WHERE id = %s",
            [subscription["id"]],
        )
        row = cursor.fetchone()
    assert row is not None and secret not in str(row[0]) and secret[6:] not in str(row[0])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event_types": ["agent.exploded"]}, "event_types"),
        ({"event_types": ["nope.*"]}, "event_types"),
        ({"event_types": []}, "event_types"),
        ({"event_types": "agent.*"}, "event_types"),
        ({"event_types": [["agent.*"]]}, "event_types"),
        ({"url": "http://public.invalid/hook"}, "url"),
        ({"url": "https://x/" + "a" * 2050}, "url"),
        ({"url": 12}, "url"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"rate_limit": "5"}, "rate_limit"),
        ({"active": "yes"}, "active"),
        ({"description": "x" * 501}, "description"),
        ({"secret": "whsec_mine"}, "secret"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    api: APIClient, org: Organization, receiver: Receiver, body: dict[str, Any], field: str
) -> None:
    payload = {"url": receiver.url, "event_types": ["agent.*"], **body}
    response = api.post("/webhooks", payload, format="json")
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert any(name.split("[")[0] == field for name in response.json()["errors"])
    with tenant_context(org.id):
        assert not WebhookSubscription.objects.filter(organization_id=org.id).exists()


def test_hostile_bodies_are_refused_cleanly(api: APIClient, receiver: Receiver) -> None:
    for raw in (
        '{"url": "https://a\\u0000b/", "event_types": ["*"]}',
        '{"url": "' + receiver.url + '", "event_types": ["*"], "description": "a\\u0000"}',
        '{"url": "' + receiver.url + '", "event_types": ["\\ud800"]}',
        "[" * 100_000,
        '{"event_types": ' + "[" * 5000 + "]" * 5000 + "}",
    ):
        response = api.generic("POST", "/webhooks", raw, content_type="application/json")
        assert response.status_code in {400, 413}, (raw[:40], response.content[:200])
        assert response["Content-Type"] == "application/problem+json"


def test_update_delete_and_the_secret_leaving_the_store(
    api: APIClient,
    org: Organization,
    receiver: Receiver,
    django_capture_on_commit_callbacks: Any,
) -> None:
    created = _create(api, receiver)
    path = f"/webhooks/{created['subscription']['id']}"
    response = api.patch(path, {"event_types": ["token.issued"], "active": False}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["event_types"] == ["token.issued"]
    assert response.json()["active"] is False
    response = api.patch(path, {"url": "https://169.254.169.254/"}, format="json")
    assert response.status_code == 400 and "url" in response.json()["errors"]
    assert api.get(path).json()["event_types"] == ["token.issued"]  # nothing half-applied
    with tenant_context(org.id):
        ref = secret_path(WebhookSubscription.objects.get(id=created["subscription"]["id"]))
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(path).status_code == 204
    assert api.get(path).status_code == 404
    with pytest.raises(SecretNotFound):
        secret_store().read(ref)


def test_ping_deliveries_filters_and_redeliver(
    api: APIClient, org: Organization, receiver: Receiver
) -> None:
    created = _create(api, receiver, event_types=["agent.created"])
    sub = created["subscription"]["id"]
    response = api.post(f"/webhooks/{sub}/test")
    assert response.status_code == 202, response.content
    assert response.json()["event_type"] == "webhook.ping"
    for index in range(3):
        AgentFactory(organization=org, name=f"listed-{index}")
    relay_run(organization_id=org.id)
    receiver.script = [500]  # the first attempt of the first delivery sent fails
    deliveries_send(organization_id=org.id)
    deliveries = api.get(f"/webhooks/{sub}/deliveries").json()["results"]
    assert {d["event_type"] for d in deliveries} == {"webhook.ping", "agent.created"}
    pings = api.get(f"/webhooks/{sub}/deliveries", {"event_type": "webhook.ping"}).json()
    assert [d["event_type"] for d in pings["results"]] == ["webhook.ping"]
    family = api.get(f"/webhooks/{sub}/deliveries", {"event_type": "agent.*"}).json()["results"]
    assert len(family) == 3
    page = api.get(f"/webhooks/{sub}/deliveries", {"page_size": 2}).json()
    assert len(page["results"]) == 2 and page["next"]
    rest = api.get(page["next"]).json()["results"]
    assert {d["id"] for d in rest}.isdisjoint({d["id"] for d in page["results"]})
    assert len(rest) == 2
    succeeded = api.get(f"/webhooks/{sub}/deliveries", {"status": "succeeded"}).json()["results"]
    target = succeeded[0]
    detail = api.get(f"/webhooks/{sub}/deliveries/{target['id']}").json()
    assert detail["payload"]["id"] == target["event_id"]
    assert detail["attempt_log"][-1]["outcome"] == "success"
    before = len(receiver.received)
    response = api.post(f"/webhooks/{sub}/deliveries/{target['id']}/redeliver")
    assert response.status_code == 202 and response.json()["status"] == "pending"
    deliveries_send(organization_id=org.id)
    # sent again (beside, perhaps, the retry of the delivery whose first attempt failed)
    assert target["event_id"] in [r.headers["webhook-id"] for r in receiver.received[before:]]
    assert api.get(f"/webhooks/{sub}/deliveries", {"since": "2000-01-01T00:00:00Z"}).json()[
        "results"
    ]
    for bad in ({"status": "lost"}, {"since": "yesterday"}, {"cursor": "abc"}, {"page_size": 0}):
        response = api.get(f"/webhooks/{sub}/deliveries", bad)
        assert response.status_code == 400, (bad, response.content)


def test_rotate_secret_returns_the_new_secret_once(
    api: APIClient, org: Organization, receiver: Receiver
) -> None:
    created = _create(api, receiver)
    sub = created["subscription"]["id"]
    response = api.post(f"/webhooks/{sub}/rotate-secret", {"overlap_seconds": 600}, format="json")
    assert response.status_code == 200, response.content
    new = response.json()["secret"]
    assert new != created["secret"] and new.startswith("whsec_")
    assert response.json()["subscription"]["previous_secret_expires_at"]
    assert response["Cache-Control"] == "no-store"
    bad = api.post(f"/webhooks/{sub}/rotate-secret", {"overlap_seconds": -1}, format="json")
    assert bad.status_code == 400 and "overlap_seconds" in bad.json()["errors"]


def test_an_agent_token_with_webhooks_manage_may_subscribe(
    org: Organization, receiver: Receiver, token_for: Callable[..., str]
) -> None:
    cred = credentialed(org, scopes=["webhooks:manage"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(cred)}")
    response = client.post(
        "/webhooks", {"url": receiver.url, "event_types": ["token.issued"]}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["subscription"]["created_by"] == str(cred.agent.id)


ENDPOINTS = [
    ("get", "/webhooks/{sub}"),
    ("patch", "/webhooks/{sub}"),
    ("delete", "/webhooks/{sub}"),
    ("post", "/webhooks/{sub}/test"),
    ("post", "/webhooks/{sub}/rotate-secret"),
    ("get", "/webhooks/{sub}/deliveries"),
    ("get", "/webhooks/{sub}/deliveries/{delivery}"),
    ("post", "/webhooks/{sub}/deliveries/{delivery}/redeliver"),
]


@pytest.fixture
def target(org: Organization, api: APIClient, receiver: Receiver) -> dict[str, str]:
    sub = _create(api, receiver)["subscription"]["id"]
    delivery = api.post(f"/webhooks/{sub}/test").json()["id"]
    return {"sub": sub, "delivery": delivery}


def _call(client: APIClient, method: str, path: str, target: dict[str, str]) -> Any:
    url = path.format(**target)
    if method in {"post", "patch"}:
        return getattr(client, method)(
            url, {"description": "x"} if method == "patch" else {}, format="json"
        )
    return getattr(client, method)(url)


@pytest.mark.parametrize(
    ("method", "path"), [*ENDPOINTS, ("get", "/webhooks"), ("post", "/webhooks")]
)
def test_anonymous_is_401_and_missing_scope_is_403(
    method: str,
    path: str,
    target: dict[str, str],
    org: Organization,
    client_for: Callable[[User | None], APIClient],
) -> None:
    response = _call(APIClient(), method, path, target)
    assert response.status_code == 401
    member = StaffFactory(organization=org, role=MemberRole.MEMBER)  # agents:read only
    response = _call(client_for(member), method, path, target)
    assert response.status_code == 403, response.content
    auditor = StaffFactory(organization=org, role=MemberRole.AUDITOR)  # webhooks:read
    response = _call(client_for(auditor), method, path, target)
    assert response.status_code == (200 if method == "get" else 403), response.content


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_another_organizations_subscription_is_404_and_unchanged(
    method: str,
    path: str,
    target: dict[str, str],
    org: Organization,
    client_for: Callable[[User | None], APIClient],
) -> None:
    outsider = StaffFactory(organization=OrganizationFactory(), role=MemberRole.OWNER)
    with tenant_context(org.id):
        before = WebhookSubscription.objects.values().get(id=target["sub"])
    response = _call(client_for(outsider), method, path, target)
    assert response.status_code == 404, response.content
    with tenant_context(org.id):
        assert WebhookSubscription.objects.values().get(id=target["sub"]) == before
    listed = client_for(outsider).get("/webhooks").json()["results"]
    assert listed == []


def test_rls_hides_subscriptions_from_other_organizations(
    org: Organization, other_org: Organization, api: APIClient, receiver: Receiver
) -> None:
    _create(api, receiver)
    with tenant_context(other_org.id):
        assert not WebhookSubscription.objects.exists()
    with tenant_context(org.id):
        assert WebhookSubscription.objects.count() == 1


def test_an_organization_has_at_most_a_hundred_subscriptions(
    api: APIClient, org: Organization, receiver: Receiver
) -> None:
    with tenant_context(org.id):
        WebhookSubscription.objects.bulk_create(
            WebhookSubscription(
                organization_id=org.id, url=receiver.url, event_types=["*"], secret_ref="x",
                created_by="tests",
            )
            for _ in range(MAX_SUBSCRIPTIONS)
        )  # fmt: skip
    response = api.post("/webhooks", {"url": receiver.url, "event_types": ["*"]}, format="json")
    assert response.status_code == 409, response.content
    assert response["Content-Type"] == "application/problem+json"
    with tenant_context(org.id):
        assert (
            WebhookSubscription.objects.filter(organization_id=org.id).count() == MAX_SUBSCRIPTIONS
        )
