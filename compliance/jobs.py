"""Recorded runs of the scheduled compliance jobs: each run leaves a :class:`JobRun` with its
outcome and what it found, whether it succeeded, found a problem or raised."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from agentidp.errors import JSONValue
from compliance.models import JobOutcome, JobRun


@dataclass
class Run:
    """What the block reports: ``detail`` (JSON) and whether it found a problem."""

    detail: dict[str, JSONValue] = field(default_factory=dict)
    failed: bool = False


@contextmanager
def job_recorded(job: str, *, organization_id: uuid.UUID | None = None) -> Iterator[Run]:
    """Run the block as one recorded run of ``job``. An exception is recorded as a failure
    (its type and message, which never hold a secret) and raised again. The record is written
    in its own transaction, after the block."""
    run = Run()
    started = timezone.now()
    try:
        yield run
    except Exception as exc:
        run.detail["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        _record(job, organization_id, started, JobOutcome.FAILURE, run.detail)
        raise
    outcome = JobOutcome.FAILURE if run.failed else JobOutcome.SUCCESS
    _record(job, organization_id, started, outcome, run.detail)


def _record(
    job: str,
    organization_id: uuid.UUID | None,
    started: datetime,
    outcome: JobOutcome,
    detail: dict[str, JSONValue],
) -> None:
    with transaction.atomic():
        JobRun.objects.create(
            job=job,
            organization_ref=organization_id,
            started_at=started,
            finished_at=timezone.now(),
            outcome=outcome,
            detail=detail,
        )


# The job that warns sponsors and suspends agents whose attestation lapsed (agents.tasks).
ATTESTATION_JOB = "agent-attestation"

# The beat jobs the controls are decided on, by the job name their runs are recorded under,
# in the order a fresh deployment runs them: the log signed, then verified, then the rest.
CONTROL_JOBS = (
    ("audit-checkpoint", "compliance.tasks.audit_checkpoint_publish_all_task"),
    ("audit-chain-verify", "compliance.tasks.audit_chain_verify_all_task"),
    ("secrets-rotation", "compliance.tasks.secrets_rotation_task"),
    ("outbox-health", "compliance.tasks.outbox_health_task"),
    (ATTESTATION_JOB, "agents.tasks.attestations_enforce_all_task"),
)


def never_run_jobs() -> list[str]:
    """The Celery task names of the control jobs with no recorded run: a deployment's beat
    sends these as it starts (``agentidp.celery``), so a fresh deployment does not fail its
    controls until each job's first interval has passed."""
    ran = set(
        JobRun.objects.filter(job__in=[job for job, _ in CONTROL_JOBS])
        .values_list("job", flat=True)
        .distinct()
    )
    return [task for job, task in CONTROL_JOBS if job not in ran]
