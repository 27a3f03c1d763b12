"""Webhooks while what they depend on is down: the secret store, the receiver; and the
metrics an operator watches meanwhile."""

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from agentidp.secrets import secret_store
from agentidp.tenancy import tenant_context
from compliance.models import AuditEvent
from organizations.models import Organization
from tests.factories import AgentFactory
from tests.webhooks.conftest import Receiver, subscribe
from webhooks.delivery import deliveries_send
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from webhooks.relay import relay_run
from webhooks.services import signers


@pytest.fixture
def secret_store_down(settings: Any) -> Iterator[None]:
    vault = settings.AGENTIDP["VAULT"]
    reachable = vault["ADDR"]
    vault["ADDR"] = "http://127.0.0.1:9"  # nothing listens there
    secret_store.cache_clear()
    signers.clear()
    yield
    vault["ADDR"] = reachable
    secret_store.cache_clear()


def test_subscribing_with_the_secret_store_down_is_503_and_writes_nothing(
    api: APIClient, org: Organization, receiver: Receiver, secret_store_down: None
) -> None:
    response = api.post("/webhooks", {"url": receiver.url, "event_types": ["*"]}, format="json")
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/problem+json" and response["Retry-After"]
    with tenant_context(org.id):
        assert not WebhookSubscription.objects.filter(organization_id=org.id).exists()
        assert not AuditEvent.objects.filter(organization_id=org.id, action="webhook.created")


def test_a_delivery_waits_out_a_secret_store_outage(
    org: Organization, receiver: Receiver, settings: Any
) -> None:
    subscribe(org, receiver, ["agent.created"])
    AgentFactory(organization=org)
    relay_run(organization_id=org.id)
    vault = settings.AGENTIDP["VAULT"]
    reachable = vault["ADDR"]
    vault["ADDR"] = "http://127.0.0.1:9"
    secret_store.cache_clear()
    signers.clear()
    try:
        deliveries_send(organization_id=org.id, max_rounds=1)
    finally:
        vault["ADDR"] = reachable
        secret_store.cache_clear()
    assert receiver.received == []  # nothing unsigned ever leaves
    with tenant_context(org.id):
        (delivery,) = WebhookDelivery.objects.filter(organization_id=org.id)
        (attempt,) = WebhookAttempt.objects.filter(organization_id=org.id)
    assert delivery.status == "pending" and "secret store" in attempt.error
    time.sleep(0.05)  # the compressed retry comes due
    deliveries_send(organization_id=org.id)
    assert len(receiver.received) == 1 and receiver.received[0].verified_by == receiver.secrets


def test_metrics_show_the_queue_lag_and_outcomes(org: Organization, receiver: Receiver) -> None:
    subscribe(org, receiver, ["agent.created"])
    receiver.default = 503
    AgentFactory(organization=org)
    relay_run(organization_id=org.id)
    deliveries_send(organization_id=org.id, max_rounds=1)
    page = Client().get("/metrics").content.decode()
    lag = [
        line for line in page.splitlines() if line.startswith("agentidp_webhook_queue_lag_seconds")
    ]
    assert lag and float(lag[0].split()[-1]) > 0
    assert 'agentidp_webhook_deliveries_total{outcome="http_error"}' in page
    assert "agentidp_webhook_attempt_seconds_bucket" in page
