"""Webhooks in the admin, through a real staff login: a subscription created through the
service with its secret shown once, deliveries with their attempts, redeliver and disable, and
only the staff's own organization."""

import html
import re
import time

from django.contrib.auth.models import User

from agentidp.tenancy import tenant_context
from compliance.models import AuditEvent
from organizations.choices import MemberRole
from organizations.models import Organization
from tests.factories import AgentFactory, StaffFactory
from tests.platform.test_admin import _login
from tests.webhooks.conftest import Receiver, subscribe
from webhooks.choices import DeliveryStatus
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


def _text(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def test_a_refused_url_is_told_the_rules(staff: User, org: Organization) -> None:
    client = _login(staff)
    form = _text(client.get(f"{SUBSCRIPTIONS}add/").content.decode())
    assert "a public address (never loopback, private or link-local" in form  # before trying
    for url in ("https://169.254.169.254/latest/meta-data", "http://127.0.0.1:5432/"):
        body = {"url": url, "event_types": "agent.created", "active": "on"}
        page = _text(client.post(f"{SUBSCRIPTIONS}add/", body).content.decode())
        assert "The URL is not allowed. Outbound calls go only to public addresses" in page, url
        assert "never to a port of this deployment's own services" in page
    with tenant_context(org.id):
        assert not WebhookSubscription.objects.filter(organization_id=org.id).exists()


def test_a_test_event_from_the_subscriptions_page_shows_its_delivery(
    staff: User, org: Organization, receiver: Receiver
) -> None:
    issued = subscribe(org, receiver, ["agent.created"])
    client = _login(staff)
    page = f"{SUBSCRIPTIONS}{issued.subscription.id}/"
    detail = client.get(f"{page}change/").content.decode()
    assert f"{page}test/" in detail
    assert f"{DELIVERIES}?subscription__id__exact={issued.subscription.id}" in detail
    assert "Send the test event" in client.get(f"{page}test/").content.decode()
    sent = client.post(f"{page}test/", {"confirmed": "yes"})
    assert sent.status_code == 302 and sent["Location"].startswith(DELIVERIES)
    deliveries_send(organization_id=org.id)
    (ping,) = [r for r in receiver.received if r.payload["type"] == "webhook.ping"]
    assert ping.verified_by  # signed with the subscription's secret
    shown = _text(client.get(sent["Location"]).content.decode())
    assert "webhook.ping" in shown and "Succeeded (2xx)" in shown and "200" in shown


def test_a_dead_letter_is_replayed_from_its_page(
    staff: User, org: Organization, receiver: Receiver
) -> None:
    subscribe(org, receiver, ["agent.created"])
    receiver.default = 503
    AgentFactory(organization=org)
    relay_run(organization_id=org.id)
    for _ in range(20):
        deliveries_send(organization_id=org.id)
        with tenant_context(org.id):
            (delivery,) = WebhookDelivery.objects.filter(organization_id=org.id)
        if delivery.status == DeliveryStatus.DEAD_LETTER:
            break
        time.sleep(0.02)
    assert delivery.status == DeliveryStatus.DEAD_LETTER
    client = _login(staff)
    page = f"{DELIVERIES}{delivery.id}/"
    detail = _text(client.get(f"{page}change/").content.decode())
    assert "Replay this dead letter" in detail and "503" in detail  # the receiver's answer
    asked = _text(client.get(f"{page}redeliver/").content.decode())
    assert "dead letter (every attempt failed) after 4 attempts so far" in asked
    receiver.default = 200
    assert client.post(f"{page}redeliver/", {"confirmed": "yes"}).status_code == 302
    deliveries_send(organization_id=org.id)
    with tenant_context(org.id):
        assert WebhookDelivery.objects.get(id=delivery.id).status == DeliveryStatus.SUCCEEDED
    assert receiver.ids().count(str(delivery.event_id)) == 5


def test_deleting_a_subscription_says_what_goes_with_it(
    staff: User, org: Organization, receiver: Receiver
) -> None:
    issued = subscribe(org, receiver, ["agent.created"])
    for _ in range(3):
        AgentFactory(organization=org)
    relay_run(organization_id=org.id)
    deliveries_send(organization_id=org.id)
    AgentFactory(organization=org)
    relay_run(organization_id=org.id)  # one more, not sent yet
    client = _login(staff)
    page = f"{SUBSCRIPTIONS}{issued.subscription.id}/"
    listing = client.get(SUBSCRIPTIONS).content.decode()
    assert 'value="delete_selected"' not in listing  # each deletion is looked at
    asked = _text(client.get(f"{page}delete/").content.decode())
    assert f"No more events are sent to {receiver.url}" in asked
    assert "Deletes its 4 delivery records: 1 pending delivery will never be sent" in asked
    with tenant_context(org.id):
        assert WebhookSubscription.objects.filter(id=issued.subscription.id).exists()
    assert client.post(f"{page}delete/", {"confirmed": "yes"}).status_code == 302
    with tenant_context(org.id):
        assert not WebhookSubscription.objects.filter(id=issued.subscription.id).exists()
        (deleted,) = AuditEvent.objects.filter(organization_id=org.id, action="webhook.deleted")
    assert deleted.data["actor"] == {"username": staff.username, "role": "owner"}


def test_an_auditor_sees_webhooks_and_changes_none(org: Organization, receiver: Receiver) -> None:
    issued = subscribe(org, receiver, ["agent.created"])
    client = _login(StaffFactory(organization=org, role=MemberRole.AUDITOR))
    page = f"{SUBSCRIPTIONS}{issued.subscription.id}/"
    detail = client.get(f"{page}change/").content.decode()
    assert receiver.url in detail and 'name="_save"' not in detail
    assert f"{page}test/" not in detail and f"{page}delete/" not in detail
    assert client.post(f"{page}test/", {"confirmed": "yes"}).status_code == 404
    assert client.post(f"{page}delete/", {"confirmed": "yes"}).status_code == 404
    with tenant_context(org.id):
        assert WebhookSubscription.objects.filter(id=issued.subscription.id).exists()
