"""Compliance metrics, read at scrape time from the recorded job runs (so every process that
serves ``/metrics`` reports the same figures, whichever worker ran the job):

* ``agentidp_credentials_expiring_soon_total{organization}``: client secrets expiring within
  the warning window, from the latest ``secrets-rotation`` run;
* ``agentidp_audit_chain_integrity{organization}``: 1 when the organization's chain verified
  at its latest ``audit-chain-verify`` run, else 0;
* ``agentidp_compliance_job_last_run_timestamp_seconds{job,outcome}``: when each job last
  ran with each outcome.
"""

from collections.abc import Iterator

from django.db import DatabaseError, connection
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from compliance.models import JobRun
from compliance.rotation import JOB as ROTATION_JOB

LATEST_PER_ORGANIZATION_SQL = """
SELECT DISTINCT ON (organization_ref) organization_ref::text, outcome
  FROM compliance_jobrun
 WHERE job = 'audit-chain-verify' AND organization_ref IS NOT NULL
 ORDER BY organization_ref, started_at DESC
"""
LAST_RUNS_SQL = """
SELECT job, outcome, EXTRACT(EPOCH FROM max(finished_at)) FROM compliance_jobrun
 GROUP BY job, outcome
"""


class ComplianceCollector(Collector):
    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "agentidp_credentials_expiring_soon_total",
                "Client secrets expiring within the warning window, per organization.",
                labels=["organization"],
            ),
            GaugeMetricFamily(
                "agentidp_audit_chain_integrity",
                "1 when the organization's audit chain verified at its latest check, else 0.",
                labels=["organization"],
            ),
            GaugeMetricFamily(
                "agentidp_compliance_job_last_run_timestamp_seconds",
                "When each compliance job last finished, by outcome.",
                labels=["job", "outcome"],
            ),
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """What registering asks (so it does not collect, reading the database, at start)."""
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        expiring, integrity, last_runs = self._families()
        try:
            rotation = JobRun.objects.filter(job=ROTATION_JOB, outcome="success").first()
            with connection.cursor() as cursor:
                cursor.execute(LATEST_PER_ORGANIZATION_SQL)
                verified = cursor.fetchall()
                cursor.execute(LAST_RUNS_SQL)
                runs = cursor.fetchall()
        except DatabaseError:
            return  # the database is down: say nothing rather than a wrong zero
        counts = rotation.detail.get("credentials_expiring", {}) if rotation else {}
        for organization, count in (counts if isinstance(counts, dict) else {}).items():
            expiring.add_metric([organization], float(str(count)))
        for organization, outcome in verified:
            integrity.add_metric([organization], 1.0 if outcome == "success" else 0.0)
        for job, outcome, finished in runs:
            last_runs.add_metric([job, outcome], float(finished))
        yield expiring
        yield integrity
        yield last_runs
