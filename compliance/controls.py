"""The SOC 2 technical controls, each evaluated from the real state at the time of asking:
what was checked, when, the result, and ``passing``. Nothing here reads a configured "we
comply" flag: encryption is checked on the stored rows, TLS on this very request, rotation and
integrity on the recorded job runs, alerting on the rules file against the metrics this
process exports, access review on the organization's members.
"""

import functools
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import prometheus_client
import yaml
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.http import HttpRequest
from django.utils import timezone

from agentidp.errors import JSONValue
from agentidp.secrets import SecretStoreError, VaultSecretStore, secret_store
from agentidp.words import minute_utc, plural
from agents.choices import AgentStatus
from agents.models import Agent
from compliance.anchors import AnchorCopy, anchor_read
from compliance.checkpoints import checkpoint_latest
from compliance.encryption import ENCRYPTED_COLUMNS, PREFIX, key_encryption_key
from compliance.integrity import JOB as INTEGRITY_JOB
from compliance.integrity import audit_integrity_quick_check
from compliance.jobs import ATTESTATION_JOB
from compliance.models import JobOutcome, JobRun
from compliance.rotation import JOB as ROTATION_JOB
from organizations.choices import MemberRole
from organizations.models import Organization, StaffMembership

DEFINITIONS_FILE = Path(settings.BASE_DIR) / "docs" / "compliance" / "controls.md"
REQUIRED_ALERTS = (
    "AuthFailureSpike",
    "RateLimitExhaustion",
    "AnomalousTokenIssuance",
    "WebhookDeadLetterAccumulating",
    "AuditChainIntegrityFailed",
    "CredentialExpiryApproaching",
)
# A scheduled job counts as running when its last successful run is this recent.
ROTATION_FRESHNESS = timedelta(hours=2)
VERIFICATION_FRESHNESS = timedelta(hours=2)
CHECKPOINT_FRESHNESS = timedelta(minutes=30)
ACCESS_REVIEW_INACTIVE_DAYS = 90


@dataclass
class Control:
    """One control's status and the evidence it was decided on."""

    id: str
    name: str
    criteria: list[str]
    passing: bool = False
    checked: list[str] = field(default_factory=list)
    evidence: dict[str, JSONValue] = field(default_factory=dict)
    checked_at: datetime = field(default_factory=timezone.now)
    # Why it fails, in a sentence naming the cause ("" while it passes).
    detail: str = ""
    # What the evidence says, in a sentence, passing or not (the report's summary page).
    summary: str = ""

    def fail(self, why: str) -> None:
        """Record a cause of failure (the first one named is the control's ``detail``)."""
        self.passing = False
        if not self.detail:
            self.detail = why

    @property
    def definition(self) -> dict[str, str]:
        """What it checks, what keeps it true and what makes it fail (docs/compliance)."""
        return control_definitions().get(self.id, {})

    def as_document(self) -> dict[str, JSONValue]:
        return {
            "id": self.id,
            "name": self.name,
            "criteria": list[JSONValue](self.criteria),
            "passing": self.passing,
            "detail": self.detail,
            "summary": self.summary,
            "definition": dict[str, JSONValue](self.definition),
            "checked": list[JSONValue](self.checked),
            "checked_at": self.checked_at.isoformat(),
            "evidence": self.evidence,
        }


_DEFINITION = re.compile(r"^## (?P<name>.+?) \{#(?P<id>[a-z_]+)\}$", re.M)
_PART = re.compile(r"^\*\*(Checks|Kept true by|Fails when):\*\* (.+?)(?=\n\n|\Z)", re.M | re.S)
_PART_KEYS = {"Checks": "checks", "Kept true by": "kept_true_by", "Fails when": "fails_when"}


@functools.cache
def control_definitions() -> dict[str, dict[str, str]]:
    """Each control's definition from docs/compliance/controls.md, by control id:
    ``{"checks", "kept_true_by", "fails_when"}``, each one paragraph of plain text."""
    text = DEFINITIONS_FILE.read_text()
    headings = list(_DEFINITION.finditer(text))
    definitions: dict[str, dict[str, str]] = {}
    for index, heading in enumerate(headings):
        end = headings[index + 1].start() if index + 1 < len(headings) else len(text)
        body = text[heading.end() : end]
        definitions[heading["id"]] = {
            _PART_KEYS[label]: " ".join(part.replace("`", "").split())
            for label, part in _PART.findall(body)
        }
    return definitions


def _encryption(organization_id: uuid.UUID, request: HttpRequest | None) -> Control:
    control = Control(
        "encryption_at_rest", "Encryption at rest", ["CC6.1", "CC6.7"],
        checked=[
            "every encrypted column of the organization's rows holds an AES-256-GCM envelope",
            "the key-encryption key answers (Vault Transit, or the local development key)",
        ],
    )  # fmt: skip
    plain: dict[str, JSONValue] = {}
    total = 0
    with connection.cursor() as cursor:
        for column in ENCRYPTED_COLUMNS:
            cursor.execute(
                f'SELECT count(*), count(*) FILTER (WHERE "{column.column}" NOT LIKE %s)'  # noqa: S608
                f' FROM "{column.table}" WHERE organization_id = %s AND "{column.column}" <> \'\'',
                [f"{PREFIX}%", organization_id],
            )
            count, unencrypted = cursor.fetchone()
            total += int(count)
            plain[f"{column.table}.{column.column}"] = int(unencrypted)
    kek_name = ""
    try:
        kek = key_encryption_key()
        kek_name = kek.name
        kek_state: dict[str, JSONValue] = {"kind": kek.name, "version": kek.latest_version()}
        kek_ok = isinstance(secret_store(), VaultSecretStore) or bool(
            settings.DEBUG or settings.AGENTIDP["ALLOW_LOCAL_SECRETS"]
        )
    except SecretStoreError as exc:
        kek_state, kek_ok = {"error": str(exc)}, False
    control.evidence = {
        "encrypted_values": total, "plaintext_values": plain, "key_encryption_key": kek_state,
        "algorithm": "AES-256-GCM",
    }  # fmt: skip
    unencrypted = sum(int(str(n)) for n in plain.values())
    where = ", ".join(f"{n} in {column}" for column, n in plain.items() if n)
    control.summary = (
        f"{plural(total - unencrypted, 'stored secret value', zero='no')} encrypted with AES-256-GCM,"
        f" {unencrypted or 'none'} in plaintext; the key-encryption key is "
        + (f"{kek_name} (version {kek_state.get('version')})." if kek_name else "unreachable.")
    )
    control.passing = True
    if unencrypted:
        control.fail(
            f"{plural(unencrypted, 'value', zero='no')} stored in plaintext in an encrypted column: {where}."
        )
    if "error" in kek_state:
        control.fail(f"The key-encryption key cannot be reached: {kek_state['error']}.")
    elif not kek_ok:
        control.fail(
            "The key-encryption key is the local development key, and this deployment allows"
            " no local secrets: configure Vault Transit."
        )
    return control


def _tls(organization_id: uuid.UUID, request: HttpRequest | None) -> Control:
    control = Control(
        "tls", "Encryption in transit (TLS)", ["CC6.7"],
        checked=[
            "TLS enforcement is on (plain-HTTP writes refused, reads redirected)",
            "HSTS is sent on HTTPS responses",
            "this request reached the application over HTTPS (directly or from a trusted proxy)",
        ],
    )  # fmt: skip
    secure = bool(request is not None and request.is_secure())
    control.evidence = {
        "enforced": bool(settings.TLS_ENFORCED),
        "hsts_seconds": int(settings.SECURE_HSTS_SECONDS),
        "trusted_proxies": list[JSONValue](settings.TRUSTED_PROXIES),
        "request_secure": secure,
        "database_sslmode": {alias: _sslmode(db) for alias, db in settings.DATABASES.items()},
        "redis_tls": str(settings.REDIS_URL).startswith("rediss://"),
    }
    control.passing = True
    if not settings.TLS_ENFORCED:
        control.fail(
            "TLS enforcement is off (AGENTIDP_TLS_ENFORCED=0): this is a plain-HTTP deployment, as"
            " a development stack is; the control passes once TLS is enforced behind HTTPS."
        )
    if settings.SECURE_HSTS_SECONDS <= 0:
        control.fail("HSTS is off (SECURE_HSTS_SECONDS is 0).")
    if not secure:
        control.fail(
            "This request came over plain HTTP (not HTTPS, and not from a trusted proxy that"
            " forwarded HTTPS)."
        )
    control.summary = (
        f"TLS enforcement is {'on' if settings.TLS_ENFORCED else 'off'}, HSTS is "
        + (f"{settings.SECURE_HSTS_SECONDS} seconds" if settings.SECURE_HSTS_SECONDS > 0 else "off")
        + f", and the request was {'HTTPS' if secure else 'plain HTTP'}."
    )
    return control


def _sslmode(database: Mapping[str, object]) -> str:
    options = database.get("OPTIONS")
    return str(options.get("sslmode", "")) if isinstance(options, Mapping) else ""


def _last_run(job: str, organization_id: uuid.UUID | None = None) -> JobRun | None:
    runs = JobRun.objects.filter(job=job)
    if organization_id is not None:
        runs = runs.filter(organization_ref=organization_id)
    return runs.order_by("-started_at").first()


def _run_evidence(run: JobRun | None) -> dict[str, JSONValue]:
    if run is None:
        return {"last_run": None}
    return {
        "last_run": run.finished_at.isoformat(), "outcome": run.outcome, "detail": run.detail,
    }  # fmt: skip


def _rotation(organization_id: uuid.UUID, request: HttpRequest | None) -> Control:
    control = Control(
        "secrets_rotation", "Secrets and key rotation", ["CC6.1", "CC6.6"],
        checked=[
            f"the secrets-rotation job succeeded within {ROTATION_FRESHNESS}",
            "no client secret that expired (or whose rotation grace ended) before the job's"
            " latest successful run is left unrevoked",
            "the organization's data key is younger than DATA_KEY_ROTATION_DAYS",
        ],
    )  # fmt: skip
    run = _last_run(ROTATION_JOB)
    succeeded = (
        JobRun.objects.filter(job=ROTATION_JOB, outcome=JobOutcome.SUCCESS)
        .order_by("-started_at")
        .first()
    )
    now = timezone.now()
    # What the job has failed to fix: secrets already expired when its latest successful run
    # started (it revokes those); one expired since then is the next run's to revoke.
    cutoff = succeeded.started_at if succeeded is not None else None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE expires_at <= %s), count(*) FILTER (WHERE expires_at"
            " <= %s) FROM credentials_clientsecret WHERE organization_id = %s"
            " AND revoked_at IS NULL",
            [cutoff or now, now, organization_id],
        )
        unfixed, expired_now = (int(n) for n in cursor.fetchone())
        cursor.execute(
            "SELECT max(created_at) FROM compliance_datakey WHERE organization_id = %s",
            [organization_id],
        )
        newest_key = cursor.fetchone()[0]
    unfixed = unfixed if cutoff is not None else 0
    revoked = _expired_revoked_by_job(organization_id, since=now - timedelta(days=1))
    days = int(settings.AGENTIDP["DATA_KEY_ROTATION_DAYS"])
    key_ok = newest_key is None or now - newest_key < timedelta(days=days)
    control.evidence = {
        **_run_evidence(run),
        "last_success": succeeded.finished_at.isoformat() if succeeded else None,
        "expired_unrevoked_credentials": unfixed,
        "expired_since_last_run": expired_now - unfixed,
        "expired_revoked_by_job_last_24h": revoked,
        "newest_data_key": newest_key.isoformat() if newest_key else None,
    }  # fmt: skip
    control.summary = (
        (f"The secrets-rotation job last succeeded at {minute_utc(succeeded.finished_at)}"
         if succeeded else "The secrets-rotation job has not succeeded yet")
        + f"; {plural(revoked, 'expired secret', zero='no')} revoked by it in the last 24 hours,"
        f" {plural(unfixed, 'expired secret', zero='no')} left unrevoked by it; the newest data key is"
        + (f" from {minute_utc(newest_key)}." if newest_key else " not made yet (no data encrypted).")
    )  # fmt: skip
    control.passing = True
    _job_freshness(control, "secrets-rotation", run, succeeded, ROTATION_FRESHNESS, now)
    if unfixed:
        control.fail(
            f"{plural(unfixed, 'client secret', zero='no')} expired before the secrets-rotation job's"
            f" latest successful run ({minute_utc(succeeded.started_at) if succeeded else ''}) and"
            f" {'is' if unfixed == 1 else 'are'} still not revoked."
        )
    if not key_ok and newest_key is not None:
        control.fail(
            f"The organization's newest data key is from {minute_utc(newest_key)}, older than the"
            f" {days}-day rotation period (the daily rewrap job makes a new one)."
        )
    return control


def _hours(period: timedelta) -> str:
    hours = period.total_seconds() / 3600
    if hours >= 1:
        return f"{hours:g} hours" if hours != 1 else "1 hour"
    return f"{period.total_seconds() / 60:g} minutes"


def _run_error(run: JobRun) -> str:
    return str(run.detail.get("error") or run.detail.get("signing_rotation_refused") or "it failed")


def _job_freshness(
    control: Control,
    job: str,
    run: JobRun | None,
    succeeded: JobRun | None,
    freshness: timedelta,
    now: datetime,
) -> None:
    """Fail ``control`` unless an hourly ``job`` succeeded within ``freshness``, saying why."""
    if succeeded is None:
        control.fail(
            f"The {job} job has not succeeded yet"
            + (f": its latest run ({minute_utc(run.finished_at)}) failed: {_run_error(run)}."
               if run is not None else " (beat runs it as it starts, then hourly).")
        )  # fmt: skip
    elif now - succeeded.finished_at >= freshness:
        control.fail(
            f"The {job} job has not succeeded within {_hours(freshness)}"
            f" (the latest success finished at {minute_utc(succeeded.finished_at)}"
            + (f"; the latest run failed: {_run_error(run)}."
               if run is not None and run.outcome != JobOutcome.SUCCESS
               else "; is beat or the worker stopped?).")
        )  # fmt: skip


def _named(names: list[str]) -> str:
    """Up to ten names, and how many more."""
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    return ", ".join(names[:10]) + more


def _expired_revoked_by_job(organization_id: uuid.UUID, *, since: datetime) -> int:
    """How many of the organization's expired secrets the rotation job revoked since then."""
    total = 0
    for detail in JobRun.objects.filter(job=ROTATION_JOB, started_at__gte=since).values_list(
        "detail", flat=True
    ):
        counts = detail.get("credentials_expired_revoked") if isinstance(detail, dict) else None
        if isinstance(counts, dict):
            total += int(counts.get(str(organization_id), 0))
    return total


def _alerting(organization_id: uuid.UUID, request: HttpRequest | None) -> Control:
    control = Control(
        "alerting", "Monitoring and alerting", ["CC7.2", "CC7.3"],
        checked=[
            "monitoring/prometheus/alerts.yml defines every required alert",
            "every metric its expressions use is exported by this deployment",
        ],
    )  # fmt: skip
    rules_file = Path(settings.AGENTIDP["ALERT_RULES"])
    try:
        document = yaml.safe_load(rules_file.read_text())
        rules = [r for g in document["groups"] for r in g["rules"] if "alert" in r]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        control.evidence = {"error": f"{rules_file.name}: {type(exc).__name__}"}
        control.fail(
            f"The alert rules file {rules_file.name} cannot be read as Prometheus rules"
            f" ({type(exc).__name__})."
        )
        control.summary = control.detail
        return control
    exported = exported_metric_names()
    missing_metrics: dict[str, JSONValue] = {}
    for rule in rules:
        absent = sorted(metrics_in(str(rule["expr"])) - exported)
        if absent:
            missing_metrics[str(rule["alert"])] = list[JSONValue](absent)
    names = {str(r["alert"]) for r in rules}
    missing = [name for name in REQUIRED_ALERTS if name not in names]
    shown = rules_file.relative_to(settings.BASE_DIR) if rules_file.is_relative_to(
        settings.BASE_DIR) else rules_file  # fmt: skip
    control.evidence = {
        "rules_file": str(shown),
        "alerts": list[JSONValue](sorted(names)), "missing_alerts": list[JSONValue](missing),
        "metrics_not_exported": missing_metrics,
    }  # fmt: skip
    control.summary = (
        f"{plural(len(names), 'alert rule', zero='no')} in {shown}, {len(REQUIRED_ALERTS) - len(missing)}"
        f" of the {len(REQUIRED_ALERTS)} required; {plural(len(missing_metrics), 'rule', zero='no')} using"
        " a metric this deployment does not export."
    )
    control.passing = True
    if missing:
        control.fail(
            f"The alert rules lack {plural(len(missing), 'required alert', zero='no')}: {', '.join(missing)}."
        )
    for alert, unexported in missing_metrics.items():
        names_absent = ", ".join(str(m) for m in unexported) if isinstance(unexported, list) else ""
        control.fail(
            f"The alert {alert} uses metrics this deployment does not export: {names_absent}."
        )
    return control


def exported_metric_names() -> set[str]:
    """Every sample name this process's registry exports (counters with ``_total``,
    histograms with ``_bucket``), from one pass over it."""
    names: set[str] = set()
    for family in prometheus_client.REGISTRY.collect():
        names |= {family.name, f"{family.name}_total", f"{family.name}_bucket"}
    return names


def metrics_in(expression: str) -> set[str]:
    """The AgentIdP metric names a PromQL expression uses."""
    return set(re.findall(r"\bagentidp_[a-z_]+", expression))


def _audit_integrity(organization_id: uuid.UUID, request: HttpRequest | None) -> Control:
    control = Control(
        "audit_integrity", "Audit log integrity", ["CC7.2", "CC4.1"],
        checked=[
            f"a complete verification of the organization's log (its hash chain, the Merkle root"
            f" at every signed checkpoint, the checkpoints' copies outside the database) passed"
            f" within {VERIFICATION_FRESHNESS}",
            f"a signed checkpoint of its Merkle tree was published within {CHECKPOINT_FRESHNESS}",
            "now: the log is no shorter than its newest checkpoint, the chain head is its last "
            "event, the checkpoints are numbered without gaps, chained and unchanged from their "
            "copies outside the database, and the newest one's last leaf is the event it signed",
        ],
    )  # fmt: skip
    now = timezone.now()
    run = _last_run(INTEGRITY_JOB, organization_id)
    checkpoint = checkpoint_latest(organization_id=organization_id)
    copy: AnchorCopy | None = None
    try:
        copy = anchor_read(organization_id)
        copy_state: dict[str, JSONValue] = {
            "store": copy.store, "latest_number": copy.latest.number if copy.latest else None,
        }  # fmt: skip
    except SecretStoreError as exc:
        copy_state = {"error": str(exc)}
    findings = audit_integrity_quick_check(organization_id=organization_id, copy=copy)
    control.evidence = {
        **_run_evidence(run),
        "latest_checkpoint": {
            "number": checkpoint.number, "tree_size": checkpoint.tree_size,
            "root_hash": checkpoint.root_hash, "published_at": checkpoint.published_at.isoformat(),
        } if checkpoint else None,
        "checkpoint_copy": copy_state,
        "findings_now": [f.as_document() for f in findings],
    }  # fmt: skip
    ran = run is not None and now - run.finished_at < VERIFICATION_FRESHNESS
    signed = checkpoint is not None and now - checkpoint.published_at < CHECKPOINT_FRESHNESS
    control.summary = (
        (f"The latest verification of the log ({minute_utc(run.finished_at)}) "
         + ("passed" if run.outcome == JobOutcome.SUCCESS else "failed")
         if run is not None else "The log has not been verified yet")
        + "; "
        + (f"the newest signed checkpoint, #{checkpoint.number}, covers"
           f" {plural(checkpoint.tree_size, 'event', zero='no')} and was signed at"
           f" {minute_utc(checkpoint.published_at)}"
           if checkpoint is not None else "no checkpoint has been signed")
        + f"; {plural(len(findings), 'problem', zero='no')} found in the log now."
    )  # fmt: skip
    if run is not None and run.outcome != JobOutcome.SUCCESS:
        # the latest verification's own words first: a complete walk names the first event
        found = run.detail.get("first_invalid")
        why = (
            f"{found.get('reason')} ({found.get('code')})" if isinstance(found, dict)
            else str(run.detail.get("error", "it did not complete"))
        )  # fmt: skip
        control.detail = (
            f"The latest verification ({run.detail.get('source', 'unknown')}, "
            f"{run.finished_at.isoformat()}) failed: {why}."
        )
    elif findings:
        control.detail = (
            f"The audit log fails its integrity check now: {findings[0].reason} "
            f"({findings[0].code})."
        )
    elif not ran:
        control.detail = (
            f"No complete verification of the log within {_hours(VERIFICATION_FRESHNESS)}"
            + (f" (the latest finished at {minute_utc(run.finished_at)}: is beat or the worker"
               " stopped?)." if run else " (none yet: beat runs it as it starts, then hourly).")
        )  # fmt: skip
    elif not signed:
        control.detail = (
            f"No checkpoint signed within {_hours(CHECKPOINT_FRESHNESS)}"
            + (f" (the newest, #{checkpoint.number}, at {minute_utc(checkpoint.published_at)}: is"
               " beat or the worker stopped?)." if checkpoint
               else " (none yet: beat signs one as it starts, then every 10 minutes).")
        )  # fmt: skip
    control.passing = not control.detail
    return control


def _access_review(organization_id: uuid.UUID, request: HttpRequest | None) -> Control:
    control = Control(
        "access_review", "Access review", ["CC6.2", "CC6.3"],
        checked=[
            "the organization has at least one owner",
            f"no owner or admin has been inactive for {ACCESS_REVIEW_INACTIVE_DAYS} days (no login"
            " in that time, or none since joining longer ago)",
            "every member account is active",
        ],
    )  # fmt: skip
    members = access_review_members(organization_id)
    cutoff = timezone.now() - timedelta(days=ACCESS_REVIEW_INACTIVE_DAYS)
    # Inactive: no login for the period, or, never logged in, a member for longer than that.
    stale = [
        m["username"] for m in members
        if m["role"] in (MemberRole.OWNER, MemberRole.ADMIN)
        and datetime.fromisoformat(str(m["last_login"] or m["member_since"])) < cutoff
    ]  # fmt: skip
    inactive = [m["username"] for m in members if not m["is_active"]]
    owners = [m for m in members if m["role"] == MemberRole.OWNER]
    control.evidence = {
        "members": list[JSONValue](members), "owners": len(owners),
        "stale_privileged": list[JSONValue](stale), "inactive_accounts": list[JSONValue](inactive),
    }  # fmt: skip
    control.summary = (
        f"{plural(len(members), 'member', zero='no')}, {plural(len(owners), 'owner', zero='no')};"
        f" {plural(len(stale), 'owner or admin', 'owners or admins', zero='no')} inactive for"
        f" {ACCESS_REVIEW_INACTIVE_DAYS} days; {plural(len(inactive), 'deactivated account', zero='no')}."
    )
    control.passing = True
    if not owners:
        control.fail("The organization has no owner.")
    if stale:
        control.fail(
            f"Inactive for {ACCESS_REVIEW_INACTIVE_DAYS} days or more, still an owner or admin:"
            f" {', '.join(str(u) for u in stale)}."
        )
    if inactive:
        control.fail(f"Deactivated accounts still members: {', '.join(str(u) for u in inactive)}.")
    return control


def access_review_members(organization_id: uuid.UUID) -> list[dict[str, JSONValue]]:
    """The organization's staff members and their roles (for the review and the report)."""
    user_model = get_user_model()
    memberships = StaffMembership.objects.filter(organization_id=organization_id)
    users = {u.pk: u for u in user_model.objects.filter(pk__in=memberships.values("user_id"))}
    listed: list[dict[str, JSONValue]] = []
    for membership in memberships.order_by("role", "user_id"):
        user = users.get(membership.user_id)
        if user is None:
            continue
        login = user.last_login
        listed.append({
            "username": str(user.get_username()), "role": membership.role,
            "is_active": bool(user.is_active),
            "last_login": login.isoformat() if login else None,
            "member_since": membership.created_at.isoformat(),
        })  # fmt: skip
    return listed


ATTESTATION_FRESHNESS = timedelta(hours=2)


def _sponsorship(organization_id: uuid.UUID, request: HttpRequest | None) -> Control:
    period_days = (
        Organization.objects.filter(id=organization_id)
        .values_list("attestation_period_days", flat=True)
        .first()
    ) or 90
    control = Control(
        "agent_sponsorship", "Agent sponsorship and attestation", ["CC6.1", "CC6.2", "CC6.3"],
        checked=[
            "every active agent has a sponsor who is an active person of its organization",
            "every active agent's sponsor attested it within the organization's attestation"
            f" period ({period_days} days)",
            f"the attestation job (which suspends lapsed agents) succeeded within"
            f" {_hours(ATTESTATION_FRESHNESS)}",
        ],
    )  # fmt: skip
    now = timezone.now()
    people = set(
        StaffMembership.objects.filter(
            organization_id=organization_id, user__is_active=True
        ).values_list("user_id", flat=True)
    )
    agents = list(
        Agent.objects.filter(organization_id=organization_id, status=AgentStatus.ACTIVE)
        .order_by("name")
        .values_list("name", "sponsor_id", "attested_at")
    )
    lapse = now - timedelta(days=period_days)
    unsponsored = [name for name, sponsor, _ in agents if sponsor not in people]
    lapsed = [name for name, _, attested in agents if attested is None or attested <= lapse]
    run = _last_run(ATTESTATION_JOB, organization_id)
    succeeded = (
        JobRun.objects.filter(
            job=ATTESTATION_JOB, organization_ref=organization_id, outcome=JobOutcome.SUCCESS
        )
        .order_by("-started_at")
        .first()
    )
    control.evidence = {
        **_run_evidence(run),
        "active_agents": len(agents), "attestation_period_days": period_days,
        "without_active_sponsor": list[JSONValue](unsponsored),
        "attestation_lapsed": list[JSONValue](lapsed),
    }  # fmt: skip
    control.summary = (
        f"{plural(len(agents), 'active agent', zero='no')};"
        f" {plural(len(unsponsored), 'agent', zero='no')} without an active sponsor,"
        f" {plural(len(lapsed), 'agent', zero='no')} past its {period_days}-day attestation; the"
        " attestation job "
        + (f"last succeeded at {minute_utc(succeeded.finished_at)}." if succeeded
           else "has not succeeded yet.")
    )  # fmt: skip
    control.passing = True
    if unsponsored:
        control.fail(
            f"Active without an active sponsor: {_named(unsponsored)}"
            " (reassign the sponsorship or suspend them)."
        )
    if lapsed:
        control.fail(
            f"Active past their {period_days}-day attestation: {_named(lapsed)}"
            " (their sponsor attests, or the attestation job suspends them)."
        )
    _job_freshness(control, "attestation", run, succeeded, ATTESTATION_FRESHNESS, now)
    return control


EVALUATORS: tuple[Callable[[uuid.UUID, HttpRequest | None], Control], ...] = (
    _encryption, _tls, _rotation, _alerting, _audit_integrity, _access_review, _sponsorship,
)  # fmt: skip


def controls_evaluate(
    *, organization_id: uuid.UUID, request: HttpRequest | None = None
) -> list[Control]:
    """Every control, evaluated now for the organization (in its context)."""
    return [evaluate(organization_id, request) for evaluate in EVALUATORS]
