"""Webhooks in the admin, through a real staff login: a subscription created through the
service with its secret shown once, deliveries with their attempts, redeliver and disable, and
only the staff's own organization."""

import re

from django.contrib.auth.models import User

from agentidp.tenancy import tenant_context
from organizations.models import Organization
from tests.factories import AgentFactory
from tests.platform.test_admin import _login
from tests.webhooks.conftest import Receiver, subscribe
from webhooks.delivery import deliveries_send
from webhooks.models import WebhookDelivery, WebhookSubscription
from webhooks.relay import relay_run

SUBSCRIPTIONS = "/admin/webhooks/webhooksubscription/"
DELIVERIES = "/admin/webhooks/webhookdelivery/"


def test_add_shows_the_secret_once_and_never_again(
    staff: User, org: Organization, receiver: Receiver
) -> None:
    client = _login(staff)
    body = {"url": receiver.url, "event_types": "agent.created,agent.suspended", "active": "on",
            "description": "from the admin", "rate_limit": ""}  # fmt: skip
    response = client.post(f"{SUBSCRIPTIONS}add/", body)
    assert response.status_code == 200, response.content[:2000]
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    (secret,) = re.findall(r"whsec_[A-Za-z0-9+/=]+", page)
    with tenant_context(org.id):
        subscription = WebhookSubscription.objects.get(organization_id=org.id)
    assert subscription.event_types == ["agent.created", "agent.suspended"]
    listing = client.get(SUBSCRIPTIONS).content.decode()
    detail = client.get(f"{SUBSCRIPTIONS}{subscription.id}/change/").content.decode()
    assert receiver.url in listing
    for shown in (listing, detail):
        assert secret not in shown and subscription.secret_ref not in shown


def test_bad_url_and_event_types_are_form_errors(staff: User, org: Organization) -> None:
    body = {"url": "https://169.254.169.254/", "event_types": "agent.exploded", "active": "on"}
    page = _login(staff).post(f"{SUBSCRIPTIONS}add/", body).content.decode()
    assert "The URL is not allowed." in page and "Unknown event type" in page
    with tenant_context(org.id):
        assert not WebhookSubscription.objects.filter(organization_id=org.id).exists()


def test_deliveries_listed_redelivered_and_disable(
    staff: User, org: Organization, other_org: Organization, receiver: Receiver
) -> None:
    issued = subscribe(org, receiver, ["agent.created"])
    foreign = subscribe(other_org, receiver, ["agent.created"])
    AgentFactory(organization=org, name="admin-visible")
    AgentFactory(organization=other_org, name="admin-hidden")
    for organization in (org, other_org):
        relay_run(organization_id=organization.id)
        deliveries_send(organization_id=organization.id)
    client = _login(staff)
    with tenant_context(org.id):
        (delivery,) = WebhookDelivery.objects.filter(organization_id=org.id)
    listing = client.get(DELIVERIES, {"status__exact": "succeeded"}).content.decode()
    assert str(delivery.id) in listing
    detail = client.get(f"{DELIVERIES}{delivery.id}/change/").content.decode()
    assert "admin-visible" in detail and "200" in detail  # the body and its attempt
    with tenant_context(other_org.id):
        (hidden,) = WebhookDelivery.objects.filter(organization_id=other_org.id)
    assert str(hidden.id) not in client.get(DELIVERIES).content.decode()
    assert client.get(f"{DELIVERIES}{hidden.id}/change/").status_code == 302  # not found: away
    response = client.post(
        DELIVERIES, {"action": "redeliver", "_selected_action": [str(delivery.id)]}
    )
    assert response.status_code == 302
    deliveries_send(organization_id=org.id)
    assert receiver.ids().count(str(delivery.event_id)) == 2
    client.post(
        SUBSCRIPTIONS, {"action": "disable", "_selected_action": [str(issued.subscription.id)]}
    )
    client.post(
        SUBSCRIPTIONS, {"action": "disable", "_selected_action": [str(foreign.subscription.id)]}
    )
    with tenant_context(org.id):
        assert not WebhookSubscription.objects.get(id=issued.subscription.id).active
    with tenant_context(other_org.id):
        assert WebhookSubscription.objects.get(id=foreign.subscription.id).active
