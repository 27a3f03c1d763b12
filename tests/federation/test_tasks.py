"""Federation's beat job as beat runs it: scheduled in the admin database, one task per
organization that has partners, onto the real broker."""

import base64
import json

import pytest
import redis
from django.conf import settings
from django_celery_beat.models import PeriodicTask

from agentidp.tenancy import tenant_context
from federation.models import FederationPartner
from federation.tasks import partners_maintain_all_task
from organizations.models import Organization

pytestmark = pytest.mark.django_db


def test_the_job_is_scheduled_and_fans_out_to_organizations_with_partners(
    org: Organization, other_org: Organization
) -> None:
    job = PeriodicTask.objects.get(name="Federation: expire partners and refresh their keys")
    assert job.task == "federation.tasks.partners_maintain_all_task" and job.enabled
    with tenant_context(org.id):
        FederationPartner.objects.create(
            organization_id=org.id, issuer="https://partner.example", jwks_uri="x", created_by="t"
        )
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("celery")
    try:
        count = partners_maintain_all_task()
        raw: list[bytes] = broker.lrange("celery", 0, -1)  # type: ignore[assignment]
    finally:
        broker.delete("celery")
    queued = [json.loads(base64.b64decode(json.loads(m)["body"]))[0][0] for m in raw]
    assert str(org.id) in queued and str(other_org.id) not in queued
    assert count == len(queued)
