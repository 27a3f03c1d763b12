"""The outbox-health job: is every recorded event on its way out? Recorded as an
``outbox-health`` run, failed when deliveries or the relay have fallen behind.

* the oldest pending webhook delivery (older than ``OUTBOX_MAX_LAG_SECONDS`` is unhealthy);
* per organization with active subscriptions, how many events the webhook relay has not yet
  read (the audit chain is the outbox: head sequence minus the relay's cursor);
* dead letters recorded in the last 24 hours.
"""

from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from agentidp.errors import JSONValue
from agentidp.tenancy import platform_context
from compliance.jobs import job_recorded
from webhooks.choices import DeliveryStatus, StreamName
from webhooks.models import WebhookDelivery
from webhooks.selectors import undelivered_age_seconds

REASON = "beat:outbox-health"
JOB = "outbox-health"

RELAY_LAG_SQL = """
SELECT h.organization_id::text, h.sequence - COALESCE(c.sequence, 0)
  FROM compliance_auditchainhead h
  LEFT JOIN webhooks_eventcursor c ON c.organization_id = h.organization_id AND c.stream = %s
 WHERE h.sequence > COALESCE(c.sequence, 0)
   AND EXISTS (SELECT 1 FROM webhooks_webhooksubscription s
                WHERE s.organization_id = h.organization_id AND s.active)
"""


def outbox_health_run() -> dict[str, JSONValue]:
    """One recorded run; returns its detail."""
    limit = float(settings.AGENTIDP["OUTBOX_MAX_LAG_SECONDS"])
    with job_recorded(JOB) as run:
        oldest = undelivered_age_seconds(reason=REASON)
        with platform_context(reason=REASON), connection.cursor() as cursor:
            cursor.execute(RELAY_LAG_SQL, [StreamName.WEBHOOKS.value])
            lag: dict[str, JSONValue] = {str(o): int(n) for o, n in cursor.fetchall()}
            dead = WebhookDelivery.objects.filter(
                status=DeliveryStatus.DEAD_LETTER,
                completed_at__gte=timezone.now() - timedelta(hours=24),
            ).count()
        run.detail.update(
            oldest_pending_delivery_seconds=round(oldest, 1),
            relay_lag_events=lag,
            dead_letters_24h=dead,
            max_lag_seconds=limit,
        )
        run.failed = oldest > limit
        return dict(run.detail)
