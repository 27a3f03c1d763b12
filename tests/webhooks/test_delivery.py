"""Delivery end to end: events recorded by services, relayed from the audit log, sent to a live
receiver that verifies every signature with the standardwebhooks library."""

import uuid
from datetime import timedelta

import time_machine
from django.utils import timezone
from prometheus_client import REGISTRY
from werkzeug import Request, Response

from agentidp.tenancy import platform_context, tenant_context
from agents.services import agent_suspend
from compliance.models import AuditEvent
from oidc.choices import KeyStatus
from oidc.keys import key_event, signing_keys_ensure
from oidc.models import SigningKey
from organizations.models import Organization
from tests.factories import TEST_ACTOR, AgentFactory, OrganizationFactory
from tests.webhooks.conftest import Receiver, agentidp_override, subscribe
from webhooks.choices import DeliveryStatus
from webhooks.delivery import deliveries_send
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from webhooks.relay import relay_run
from webhooks.services import subscription_secret_rotate
from webhooks.tasks import deliveries_send_task, relay_task, webhooks_pump_task


def _deliver(organization: Organization) -> None:
    relay_run(organization_id=organization.id)
    deliveries_send(organization_id=organization.id)


def _deliveries(organization: Organization) -> list[WebhookDelivery]:
    with tenant_context(organization.id):
        return list(WebhookDelivery.objects.filter(organization_id=organization.id))


def test_an_agent_event_arrives_signed_with_the_standard_envelope(
    org: Organization, receiver: Receiver
) -> None:
    subscribe(org, receiver, ["agent.*"])
    agent = AgentFactory(organization=org, name="webhook-subject")
    _deliver(org)
    assert len(receiver.received) == 1
    got = receiver.received[0]
    assert got.verified_by == receiver.secrets  # the standardwebhooks library accepts it
    payload = got.payload
    assert payload["type"] == "agent.created"
    assert payload["organization_id"] == str(org.id)
    assert payload["data"]["subject"] == {"type": "agent", "id": str(agent.id)}
    assert payload["data"]["name"] == "webhook-subject"
    assert set(payload) == {"id", "type", "timestamp", "organization_id", "data"}
    assert got.headers["webhook-id"] == payload["id"]
    assert got.headers["webhook-signature"].startswith("v1,")
    with tenant_context(org.id):
        audit = AuditEvent.objects.get(organization_id=org.id, action="agent.created")
    assert payload["id"] == str(audit.id)  # the envelope id is the audit event's id
    (delivery,) = _deliveries(org)
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.attempts == 1


def test_only_subscribed_types_and_only_the_own_organization(
    org: Organization, other_org: Organization, receiver: Receiver
) -> None:
    subscribe(org, receiver, ["agent.suspended"])
    agent = AgentFactory(organization=org)
    AgentFactory(organization=other_org)
    with tenant_context(org.id):
        agent_suspend(actor=TEST_ACTOR, organization_id=org.id, agent_id=agent.id, reason="x")
    _deliver(org)
    _deliver(other_org)
    assert [r.payload["type"] for r in receiver.received] == ["agent.suspended"]


def test_retries_on_500_then_succeeds_with_the_same_id_and_body(
    org: Organization, receiver: Receiver
) -> None:
    subscribe(org, receiver, ["agent.created"])
    receiver.script = [500, 503]
    AgentFactory(organization=org)
    relay_run(organization_id=org.id)
    deadline = timezone.now() + timedelta(seconds=10)
    while len(receiver.received) < 3 and timezone.now() < deadline:
        deliveries_send(organization_id=org.id)
    assert len(receiver.received) == 3
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert len({r.body for r in receiver.received}) == 1
    (delivery,) = _deliveries(org)
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.attempts == 3
    with tenant_context(org.id):
        attempts = list(WebhookAttempt.objects.filter(delivery=delivery).order_by("started_at"))
    assert [(a.number, a.outcome, a.http_status) for a in attempts] == [
        (1, "http_error", 500),
        (2, "http_error", 503),
        (3, "success", 200),
    ]
    assert attempts[0].response_excerpt == "no"


def _metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_the_last_failure_is_a_dead_letter_and_counted(
    org: Organization, receiver: Receiver
) -> None:
    subscribe(org, receiver, ["agent.created"])
    receiver.default = 500
    before = _metric("agentidp_webhook_dead_letters_total")
    AgentFactory(organization=org)
    relay_run(organization_id=org.id)
    deadline = timezone.now() + timedelta(seconds=10)
    while _deliveries(org)[0].status == DeliveryStatus.PENDING and timezone.now() < deadline:
        deliveries_send(organization_id=org.id)
    (delivery,) = _deliveries(org)
    assert delivery.status == DeliveryStatus.DEAD_LETTER
    assert delivery.attempts == 4  # the first attempt and three retries (the compressed schedule)
    assert len(receiver.received) == 4
    assert _metric("agentidp_webhook_dead_letters_total") == before + 1


def test_410_disables_the_subscription_with_an_event(org: Organization, receiver: Receiver) -> None:
    issued = subscribe(org, receiver, ["agent.created"])
    receiver.default = 410
    AgentFactory(organization=org)
    _deliver(org)
    with tenant_context(org.id):
        subscription = WebhookSubscription.objects.get(id=issued.subscription.id)
        disabled = AuditEvent.objects.filter(organization_id=org.id, action="webhook.disabled")
        assert disabled.count() == 1
        assert disabled.get().data["reason"] == "gone"
    assert not subscription.active and subscription.disabled_reason == "gone"
    (delivery,) = _deliveries(org)
    assert delivery.status == DeliveryStatus.CANCELLED
    AgentFactory(organization=org)
    _deliver(org)
    assert len(receiver.received) == 1  # nothing more goes to a disabled subscription


def test_retry_after_is_honoured(org: Organization, receiver: Receiver) -> None:
    subscribe(org, receiver, ["agent.created"])

    def busy(request: Request) -> Response:
        return Response("slow down", status=429, headers={"Retry-After": "1"})

    receiver.script = [busy]
    AgentFactory(organization=org)
    _deliver(org)
    (delivery,) = _deliveries(org)
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.next_attempt_at is not None
    wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
    assert 0.5 < wait <= 1.0  # the receiver's 1 s, not the compressed 10 ms


def test_secret_rotation_sends_both_signatures_during_the_overlap(
    org: Organization, receiver: Receiver
) -> None:
    issued = subscribe(org, receiver, ["agent.created"])
    old = issued.secret
    with tenant_context(org.id):
        rotated = subscription_secret_rotate(
            actor=TEST_ACTOR, organization_id=org.id, subscription_id=issued.subscription.id,
            overlap_seconds=3600,
        )  # fmt: skip
    receiver.secrets.append(rotated.secret)
    AgentFactory(organization=org)
    _deliver(org)
    (got,) = receiver.received
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert set(got.verified_by) == {old, rotated.secret}  # a receiver on either secret verifies
    # after the overlap, only the new secret signs
    with time_machine.travel(timezone.now() + timedelta(hours=2), tick=True):
        AgentFactory(organization=org)
        _deliver(org)
    assert receiver.received[1].verified_by == [rotated.secret]
    assert len(receiver.received[1].headers["webhook-signature"].split(" ")) == 1


def test_the_relay_is_idempotent_and_misses_nothing(org: Organization, receiver: Receiver) -> None:
    subscribe(org, receiver, ["agent.created"])
    for _ in range(5):
        AgentFactory(organization=org)
    relay_run(organization_id=org.id)
    relay_run(organization_id=org.id)
    assert len(_deliveries(org)) == 5
    deliveries_send(organization_id=org.id)
    deliveries_send(organization_id=org.id)
    assert len(receiver.received) == 5
    assert len(set(receiver.ids())) == 5


def test_events_before_the_subscription_are_not_sent(org: Organization, receiver: Receiver) -> None:
    AgentFactory(organization=org)
    subscribe(org, receiver, ["agent.created"])
    AgentFactory(organization=org, name="after")
    _deliver(org)
    assert [r.payload["data"]["name"] for r in receiver.received] == ["after"]


def test_a_subscription_failing_too_long_is_disabled(org: Organization, receiver: Receiver) -> None:
    restore = agentidp_override(WEBHOOK_DISABLE_AFTER_SECONDS=60, WEBHOOK_RETRY_SCHEDULE=[5] * 10)
    try:
        issued = subscribe(org, receiver, ["agent.created"])
        receiver.default = 500
        AgentFactory(organization=org)
        _deliver(org)
        with tenant_context(org.id):
            subscription = WebhookSubscription.objects.get(id=issued.subscription.id)
            assert subscription.failing_since and subscription.active
            # it has been failing for two minutes by the time its retry comes due
            WebhookSubscription.objects.filter(id=subscription.id).update(
                failing_since=timezone.now() - timedelta(seconds=120)
            )
            WebhookDelivery.objects.filter(organization_id=org.id).update(
                next_attempt_at=timezone.now()
            )
        deliveries_send(organization_id=org.id)
        with tenant_context(org.id):
            subscription = WebhookSubscription.objects.get(id=issued.subscription.id)
            events = AuditEvent.objects.filter(organization_id=org.id, action="webhook.disabled")
            assert events.get().data["reason"] == "failing"
        assert not subscription.active and subscription.disabled_reason == "failing"
        assert len(receiver.received) == 2
    finally:
        restore()


def test_rate_limit_spreads_deliveries_over_seconds(org: Organization, receiver: Receiver) -> None:
    subscribe(org, receiver, ["agent.created"], rate_limit=2)
    for _ in range(5):
        AgentFactory(organization=org)
    relay_run(organization_id=org.id)
    deliveries_send(organization_id=org.id, max_rounds=1)
    assert len(receiver.received) == 2
    pending = [d for d in _deliveries(org) if d.status == DeliveryStatus.PENDING]
    assert len(pending) == 3 and all(d.attempts == 0 for d in pending)


def test_platform_key_events_reach_subscribed_organizations(
    org: Organization, receiver: Receiver, system_org: Organization
) -> None:
    subscribe(org, receiver, ["key.*"])
    outsider = OrganizationFactory()
    subscribe(outsider, receiver, ["agent.*"])
    with platform_context(reason="tests"):
        signing_keys_ensure()
        key = SigningKey.objects.filter(status=KeyStatus.NEXT).first()
        assert key is not None
        key_event(key, "key.published", TEST_ACTOR, status=key.status)  # as a rotation records it
    relay_run(organization_id=system_org.id)
    deliveries_send(organization_id=org.id)
    deliveries_send(organization_id=outsider.id)
    received = [r.payload for r in receiver.received]
    assert received and {p["type"].split(".")[0] for p in received} == {"key"}
    ours = [p for p in received if p["type"] == "key.published" and p["data"]["kid"] == key.kid]
    assert ours and ours[-1]["data"]["subject"] == {"type": "signing_key", "id": key.kid}
    assert all(r.verified_by == receiver.secrets[:1] for r in receiver.received)  # org's secret
    with tenant_context(outsider.id):
        assert not WebhookDelivery.objects.filter(organization_id=outsider.id).exists()


def test_unknown_subscription_id_or_org_does_not_crash() -> None:
    assert relay_run(organization_id=uuid.uuid4()).events == 0
    assert deliveries_send(organization_id=uuid.uuid4()).attempted == 0


def test_the_tasks_relay_send_and_the_pump_expires_old_secrets(
    org: Organization, receiver: Receiver
) -> None:
    issued = subscribe(org, receiver, ["agent.created"])
    AgentFactory(organization=org)
    assert relay_task(str(org.id))["deliveries"] == 1
    assert deliveries_send_task(str(org.id))["succeeded"] == 1
    assert len(receiver.received) == 1
    with tenant_context(org.id):
        subscription_secret_rotate(
            actor=TEST_ACTOR, organization_id=org.id, subscription_id=issued.subscription.id,
            overlap_seconds=60,
        )  # fmt: skip
    assert webhooks_pump_task()["secrets_expired"] == 0
    with time_machine.travel(timezone.now() + timedelta(minutes=5), tick=True):
        assert webhooks_pump_task()["secrets_expired"] != 0
    with tenant_context(org.id):
        subscription = WebhookSubscription.objects.get(id=issued.subscription.id)
    assert (
        subscription.previous_secret_ref == "" and subscription.previous_secret_expires_at is None
    )
