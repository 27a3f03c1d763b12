"""The beat jobs as beat runs them: each is scheduled in the admin database, and each fans out
one task per organization onto the real broker, for a worker to run in that organization."""

import base64
import json
from collections.abc import Callable

import pytest
import redis
from django.conf import settings
from django_celery_beat.models import PeriodicTask

from compliance.tasks import audit_chain_verify_all_task, audit_checkpoint_publish_all_task
from credentials.tasks import credential_last_used_persist_all_task
from oidc.tasks import revocations_purge_all_task
from organizations.models import Organization
from organizations.tasks import token_usage_persist_all_task

JOBS = [
    (
        "Verify audit chains (all organizations)",
        audit_chain_verify_all_task,
        "compliance.tasks.audit_chain_verify_task",
    ),
    (
        "Persist monthly token usage (all organizations)",
        token_usage_persist_all_task,
        "organizations.tasks.token_usage_persist_task",
    ),
    (
        "Persist credentials' last-used times (all organizations)",
        credential_last_used_persist_all_task,
        "credentials.tasks.credential_last_used_persist_task",
    ),
    (
        "Publish audit checkpoints (all organizations)",
        audit_checkpoint_publish_all_task,
        "compliance.tasks.audit_checkpoint_publish_task",
    ),
    (
        "Purge expired token revocations (all organizations)",
        revocations_purge_all_task,
        "oidc.tasks.revocations_purge_task",
    ),
]


@pytest.mark.parametrize(("schedule", "fan_out", "per_organization"), JOBS)
def test_fan_out_enqueues_one_task_per_organization_on_the_broker(
    org: Organization,
    other_org: Organization,
    schedule: str,
    fan_out: Callable[[], int],
    per_organization: str,
) -> None:
    assert (
        PeriodicTask.objects.get(name=schedule).task == f"{fan_out.__module__}.{fan_out.__name__}"
    )
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("celery")
    try:
        count = fan_out()
        raw_messages: list[bytes] = broker.lrange("celery", 0, -1)  # type: ignore[assignment]
    finally:
        broker.delete("celery")
    messages = [json.loads(raw) for raw in raw_messages]
    queued = [
        json.loads(base64.b64decode(m["body"]))[0][0]
        for m in messages
        if m["headers"]["task"] == per_organization
    ]
    assert count == len(queued) == len(messages)
    assert {str(org.id), str(other_org.id)} <= set(queued)
    assert len(set(queued)) == len(queued)
