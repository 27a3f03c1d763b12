"""The audit verification tasks run as a worker would run them (called synchronously)."""

import base64
import json

import redis
from django.conf import settings
from django_celery_beat.models import PeriodicTask

from compliance.tasks import audit_chain_verify_all_task, audit_chain_verify_task
from organizations.models import Organization
from tests.factories import AgentFactory


def test_verify_task_enters_the_organizations_context(org: Organization) -> None:
    AgentFactory(organization=org)
    result = audit_chain_verify_task(str(org.id))
    assert result == {
        "organization_id": str(org.id),
        "valid": True,
        "events_checked": 2,
        "first_invalid_sequence": None,
    }


def test_fan_out_enqueues_one_task_per_organization_on_the_broker(org: Organization) -> None:
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("celery")
    count = audit_chain_verify_all_task()
    raw_messages: list[bytes] = broker.lrange("celery", 0, -1)  # type: ignore[assignment]
    messages = [json.loads(raw) for raw in raw_messages]
    broker.delete("celery")
    queued = [
        json.loads(base64.b64decode(m["body"]))[0][0]
        for m in messages
        if m["headers"]["task"] == "compliance.tasks.audit_chain_verify_task"
    ]
    assert count == len(queued) and str(org.id) in queued


def test_schedule_is_in_the_admin_database() -> None:
    task = PeriodicTask.objects.get(name="Verify audit chains (all organizations)")
    assert task.task == "compliance.tasks.audit_chain_verify_all_task"
    assert task.interval is not None and task.interval.period == "hours"
