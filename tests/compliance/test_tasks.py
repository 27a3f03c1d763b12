"""The audit verification tasks run as a worker would run them (called synchronously)."""

from django_celery_beat.models import PeriodicTask

from compliance.tasks import audit_chain_verify_task
from organizations.models import Organization
from tests.factories import AgentFactory


def test_verify_task_enters_the_organizations_context(org: Organization) -> None:
    AgentFactory(organization=org)
    result = audit_chain_verify_task(str(org.id))
    assert result == {
        "organization_id": str(org.id),
        "verified": True,
        "checked": 3,  # organization.created, agent.created, did.created
        "brokenAtEventId": None,
        "from": 1,
        "to": None,
        "valid": True,
        "events_checked": 3,
        "head_sequence": 3,
        "complete": True,
        "checks": {
            "checkpoints": 0,
            "roots_compared": 0,
            "signatures_verified": 0,
            "copy": {"store": "vault", "anchors": 0, "latest_number": None},
            "newest_checkpoint": None,
        },
    }


def test_schedule_is_in_the_admin_database() -> None:
    task = PeriodicTask.objects.get(name="Verify audit chains (all organizations)")
    assert task.task == "compliance.tasks.audit_chain_verify_all_task"
    assert task.interval is not None and task.interval.period == "hours"
