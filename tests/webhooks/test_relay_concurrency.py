"""The audit log as the outbox, under concurrent transactions: writers commit events while the
relay runs over and over; every event is handed on exactly once, none skipped, even when a
writer holds its transaction open after appending (later sequences wait for it)."""

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.db import transaction

from agentidp.events import event_record
from agentidp.tenancy import tenant_context
from compliance.models import AuditEvent
from organizations.models import Organization
from tests.factories import TEST_ACTOR, OrganizationFactory
from tests.webhooks.conftest import Receiver, subscribe
from webhooks.delivery import SendReport, _claim, _record, _send_one
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from webhooks.relay import relay_run
from webhooks.services import subscription_delete, webhook_options

WRITERS = 4
EVENTS_EACH = 25


def test_the_relay_misses_nothing_while_transactions_commit(
    run_in_threads: Callable[..., list[Any]], receiver: Receiver
) -> None:
    def setup() -> Organization:
        org = OrganizationFactory()
        subscribe(org, receiver, ["agent.*"])
        return org

    (org,) = run_in_threads(setup)
    done = threading.Semaphore(0)

    def writer(number: int) -> None:
        try:
            for index in range(EVENTS_EACH):
                with tenant_context(org.id), transaction.atomic():
                    event_record(
                        organization_id=org.id, actor=TEST_ACTOR, action="agent.updated",
                        subject_type="agent", subject_id=f"w{number}-{index}", data={},
                    )  # fmt: skip
                    if index % 5 == 0:
                        time.sleep(0.03)  # the chain head stays locked: others queue behind
        finally:
            done.release()

    def relay() -> int:
        runs = 0
        finished = 0
        while finished < WRITERS:
            relay_run(organization_id=org.id)
            runs += 1
            while done.acquire(blocking=False):
                finished += 1
        relay_run(organization_id=org.id)
        return runs

    results = run_in_threads(*(lambda n=n: writer(n) for n in range(WRITERS)), relay)
    assert all(not isinstance(r, BaseException) for r in results), results
    assert results[-1] > 3  # the relay really ran while the writers wrote

    def counts() -> tuple[set[str], list[str]]:
        with tenant_context(org.id):
            events = AuditEvent.objects.filter(organization_id=org.id, action="agent.updated")
            deliveries = WebhookDelivery.objects.filter(organization_id=org.id)
            return (
                {str(i) for i in events.values_list("id", flat=True)},
                [str(i) for i in deliveries.values_list("event_id", flat=True)],
            )

    ((events, delivered),) = run_in_threads(counts)
    assert len(events) == WRITERS * EVENTS_EACH
    assert sorted(delivered) == sorted(events)  # each once, none missing


def test_a_subscription_deleted_while_its_deliveries_are_in_flight(
    run_in_threads: Callable[..., list[Any]], receiver: Receiver
) -> None:
    """The worker has claimed and sent a delivery; the subscription is deleted before the
    attempt is written. The worker waits for the deletion, then writes nothing for it; the
    deletion commits (an attempt slipping in between its deletes failed it as a 500)."""

    def setup() -> tuple[Organization, uuid.UUID]:
        org = OrganizationFactory()
        issued = subscribe(org, receiver, ["agent.*"])
        with tenant_context(org.id):
            event_record(
                organization_id=org.id, actor=TEST_ACTOR, action="agent.updated",
                subject_type="agent", subject_id="in-flight", data={},
            )  # fmt: skip
        relay_run(organization_id=org.id)
        return org, issued.subscription.id

    ((org, subscription_id),) = run_in_threads(setup)
    claimed_all = threading.Event()
    deleted = threading.Event()

    def worker() -> SendReport:
        options = webhook_options()
        claimed = _claim(org.id, options)
        assert len(claimed) == 1
        sent = [_send_one(c, options) for c in claimed]
        claimed_all.set()
        assert deleted.wait(10)
        report = SendReport()
        _record(org.id, sent, [], options, report)  # waits for the deletion to commit
        return report

    def deleter() -> None:
        assert claimed_all.wait(10)
        with tenant_context(org.id):
            subscription_delete(
                actor=TEST_ACTOR, organization_id=org.id, subscription_id=subscription_id
            )
            deleted.set()
            time.sleep(0.5)  # the worker is writing its attempt now, behind this transaction

    report, deletion = run_in_threads(worker, deleter)
    assert deletion is None
    assert isinstance(report, SendReport), report
    assert report.attempted == 0
    assert len(receiver.received) == 1  # it was sent; its record went with the subscription

    def left() -> tuple[int, int, int]:
        with tenant_context(org.id):
            return (
                WebhookSubscription.objects.filter(id=subscription_id).count(),
                WebhookDelivery.objects.filter(organization_id=org.id).count(),
                WebhookAttempt.objects.filter(organization_id=org.id).count(),
            )

    assert run_in_threads(left) == [(0, 0, 0)]
