"""The SOC 2 technical controls, each evaluated from the real state at the time of asking:
what was checked, when, the result, and ``passing``. Nothing here reads a configured "we
comply" flag: encryption is checked on the stored rows, TLS on this very request, rotation and
integrity on the recorded job runs, alerting on the rules file against the metrics this
process exports, access review on the organization's members.
"""

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
from compliance.anchors import AnchorCopy, anchor_read
from compliance.checkpoints import checkpoint_latest
from compliance.encryption import ENCRYPTED_COLUMNS, PREFIX, key_encryption_key
from compliance.integrity import JOB as INTEGRITY_JOB
from compliance.integrity import audit_integrity_quick_check
from compliance.models import JobOutcome, JobRun
from organizations.choices import MemberRole
from organizations.models import StaffMembership

ALERTS_FILE = Path(settings.BASE_DIR) / "monitoring" / "prometheus" / "alerts.yml"
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
    # Why it fails, in a sentence naming the cause ("" while it passes, or where the evidence
    # alone says it).
    detail: str = ""

    def as_document(self) -> dict[str, JSONValue]:
        return {
            "id": self.id,
            "name": self.name,
            "criteria": list[JSONValue](self.criteria),
            "passing": self.passing,
            "detail": self.detail,
            "checked": list[JSONValue](self.checked),
            "checked_at": self.checked_at.isoformat(),
            "evidence": self.evidence,
        }


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
    try:
        kek = key_encryption_key()
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
    control.passing = kek_ok and not any(plain.values())
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
    control.passing = bool(settings.TLS_ENFORCED) and settings.SECURE_HSTS_SECONDS > 0 and secure
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
            "the organization has no expired client secret left unrevoked",
            "the organization's data key is younger than DATA_KEY_ROTATION_DAYS",
        ],
    )  # fmt: skip
    run = _last_run("secrets-rotation")
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM credentials_clientsecret WHERE organization_id = %s"
            " AND revoked_at IS NULL AND expires_at <= now()",
            [organization_id],
        )
        expired = int(cursor.fetchone()[0])
        cursor.execute(
            "SELECT max(created_at) FROM compliance_datakey WHERE organization_id = %s",
            [organization_id],
        )
        newest_key = cursor.fetchone()[0]
    max_age = timedelta(days=int(settings.AGENTIDP["DATA_KEY_ROTATION_DAYS"]))
    fresh = (
        run is not None
        and run.outcome == JobOutcome.SUCCESS
        and now - run.finished_at < ROTATION_FRESHNESS
    )
    key_ok = newest_key is None or now - newest_key < max_age
    control.evidence = {
        **_run_evidence(run), "expired_unrevoked_credentials": expired,
        "newest_data_key": newest_key.isoformat() if newest_key else None,
    }  # fmt: skip
    control.passing = fresh and expired == 0 and key_ok
    return control


def _alerting(organization_id: uuid.UUID, request: HttpRequest | None) -> Control:
    control = Control(
        "alerting", "Monitoring and alerting", ["CC7.2", "CC7.3"],
        checked=[
            "monitoring/prometheus/alerts.yml defines every required alert",
            "every metric its expressions use is exported by this deployment",
        ],
    )  # fmt: skip
    try:
        document = yaml.safe_load(ALERTS_FILE.read_text())
        rules = [r for g in document["groups"] for r in g["rules"] if "alert" in r]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        control.evidence = {"error": f"{ALERTS_FILE.name}: {type(exc).__name__}"}
        return control
    exported = exported_metric_names()
    missing_metrics: dict[str, JSONValue] = {}
    for rule in rules:
        absent = sorted(metrics_in(str(rule["expr"])) - exported)
        if absent:
            missing_metrics[str(rule["alert"])] = list[JSONValue](absent)
    names = {str(r["alert"]) for r in rules}
    missing = [name for name in REQUIRED_ALERTS if name not in names]
    control.evidence = {
        "rules_file": str(ALERTS_FILE.relative_to(settings.BASE_DIR)),
        "alerts": list[JSONValue](sorted(names)), "missing_alerts": list[JSONValue](missing),
        "metrics_not_exported": missing_metrics,
    }  # fmt: skip
    control.passing = not missing and not missing_metrics
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
        control.detail = f"No complete verification of the log within {VERIFICATION_FRESHNESS}" + (
            f" (the latest finished {run.finished_at.isoformat()})." if run else " (none yet)."
        )
    elif not signed:
        control.detail = (
            f"No checkpoint signed within {CHECKPOINT_FRESHNESS}"
            + (f" (the newest, #{checkpoint.number}, at {checkpoint.published_at.isoformat()})."
               if checkpoint else " (none yet).")
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
    control.passing = bool(owners) and not stale and not inactive
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


EVALUATORS: tuple[Callable[[uuid.UUID, HttpRequest | None], Control], ...] = (
    _encryption, _tls, _rotation, _alerting, _audit_integrity, _access_review,
)  # fmt: skip


def controls_evaluate(
    *, organization_id: uuid.UUID, request: HttpRequest | None = None
) -> list[Control]:
    """Every control, evaluated now for the organization (in its context)."""
    return [evaluate(organization_id, request) for evaluate in EVALUATORS]
