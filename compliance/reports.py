"""The compliance report for auditors, for one organization and a period: the controls with
their evidence, the chain verification and the latest signed checkpoint, key and secret
rotation history, members and roles (access review), dead letters and failed authentications.
As JSON (:func:`report_build`) and as a PDF with tables (:func:`report_pdf`, ReportLab).
"""

import io
import json
import uuid
from datetime import datetime
from typing import cast

from django.db.models import Count
from django.http import HttpRequest
from django.utils import timezone
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
from reportlab.platypus.flowables import Flowable

from agentidp.errors import JSONValue
from agentidp.principals import Principal
from compliance.checkpoints import checkpoint_document, checkpoint_latest
from compliance.controls import access_review_members, controls_evaluate
from compliance.integrity import audit_integrity_verify_recorded
from compliance.models import AuditEvent, JobRun
from organizations.models import Organization
from webhooks.choices import DeliveryStatus
from webhooks.models import WebhookDelivery

ROTATION_ACTIONS = (
    "credential.generated", "credential.rotated", "credential.revoked", "did.key_rotated",
    "webhook.secret_rotated", "signing_key.rotated",
)  # fmt: skip
REPORT_MAX_DAYS = 400
REPORT_JOBS = ("secrets-rotation", "rewrap", "audit-chain-verify", "audit-checkpoint")


def report_build(
    *,
    organization_id: uuid.UUID,
    since: datetime,
    until: datetime,
    actor: Principal,
    request: HttpRequest | None = None,
) -> dict[str, JSONValue]:
    """The report as JSON, read in the organization's context (the log is verified as it is
    built, recorded as a verification by ``actor``)."""
    organization = Organization.objects.get(id=organization_id)
    events = AuditEvent.objects.filter(
        organization_id=organization_id, occurred_at__gte=since, occurred_at__lt=until
    )
    verification = audit_integrity_verify_recorded(
        organization_id=organization_id, actor=actor, source="report"
    )
    checkpoint = checkpoint_latest(organization_id=organization_id)
    rotations: list[JSONValue] = [
        {"at": e.occurred_at.isoformat(), "action": e.action, "subject": f"{e.subject_type} {e.subject_id}",
         "actor": f"{e.actor_type} {e.actor_id}"}
        for e in events.filter(action__in=ROTATION_ACTIONS).order_by("occurred_at")[:500]
    ]  # fmt: skip
    runs: list[JSONValue] = [
        {"job": r.job, "outcome": r.outcome, "started_at": r.started_at.isoformat()}
        for r in JobRun.objects.filter(
            job__in=REPORT_JOBS, started_at__gte=since, started_at__lt=until
        ).filter(organization_ref__in=[organization_id, None]).order_by("-started_at")[:200]
    ]  # fmt: skip
    failed = (
        events.filter(action="auth.failed")
        .values_list("data__reason")
        .annotate(n=Count("id"))
        .order_by("-n")
    )
    dead = WebhookDelivery.objects.filter(
        organization_id=organization_id,
        status=DeliveryStatus.DEAD_LETTER,
        completed_at__gte=since,
        completed_at__lt=until,
    )
    controls = controls_evaluate(organization_id=organization_id, request=request)
    return {
        "organization": {
            "id": str(organization.id),
            "slug": organization.slug,
            "name": organization.name,
        },
        "period": {"from": since.isoformat(), "to": until.isoformat()},
        "generated_at": timezone.now().isoformat(),
        "controls": [c.as_document() for c in controls],
        "all_passing": all(c.passing for c in controls),
        "chain_verification": verification.as_document(),
        "latest_checkpoint": checkpoint_document(checkpoint) if checkpoint else None,
        "rotation_history": rotations,
        "job_runs": runs,
        "access_review": list[JSONValue](access_review_members(organization_id)),
        "dead_letters": {
            "count": dead.count(),
            "latest": [
                {
                    "id": str(d.id),
                    "event_type": d.event_type,
                    "attempts": d.attempts,
                    "last_error": d.last_error,
                }
                for d in dead.order_by("-completed_at")[:20]
            ],
        },  # fmt: skip
        "failed_authentications": {
            "total": sum(int(n) for _, n in failed),
            "by_reason": {str(reason): int(n) for reason, n in failed},
        },
        "events_in_period": events.count(),
    }


# --- the PDF ---------------------------------------------------------------------------------

_STYLES = getSampleStyleSheet()
_GRID = TableStyle([
    ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8ecf2")),
    ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
    ("FONTSIZE", (0, 0), (-1, -1), 8),
    ("VALIGN", (0, 0), (-1, -1), "TOP"),
])  # fmt: skip


def _cell(value: object) -> Paragraph:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return Paragraph(escaped[:1500], _STYLES["BodyText"])


def _table(header: list[str], rows: list[list[object]], widths: list[float]) -> Table:
    data = [[_cell(h) for h in header]] + [[_cell(c) for c in row] for row in rows]
    if not rows:
        data.append([_cell("none")] + [_cell("") for _ in header[1:]])
    table = Table(data, colWidths=[w * mm for w in widths], repeatRows=1)
    table.setStyle(_GRID)
    return table


def _rows(value: JSONValue) -> list[dict[str, JSONValue]]:
    return [cast(dict[str, JSONValue], r) for r in value] if isinstance(value, list) else []


def report_pdf(report: dict[str, JSONValue]) -> bytes:
    """The report as a readable PDF: a section per part, tables for everything listed."""
    organization = cast(dict[str, str], report["organization"])
    period = cast(dict[str, str], report["period"])
    heading, sub, body = _STYLES["Title"], _STYLES["Heading2"], _STYLES["BodyText"]
    story: list[Flowable] = [
        Paragraph(f"AgentIdP compliance report: {organization['name']}", heading),
        Paragraph(
            f"Organization {organization['slug']} ({organization['id']}); period "
            f"{period['from']} to {period['to']}; generated {report['generated_at']}.", body,
        ),
        Paragraph("Controls", sub),
        _table(
            ["Control", "Passing", "What was checked", "Evidence"],
            [[c["name"], "yes" if c["passing"] else "NO", "; ".join(cast(list[str], c["checked"])),
              c["evidence"]] for c in _rows(report["controls"])],
            [32, 16, 60, 72],
        ),
        Paragraph("Audit chain verification", sub),
    ]  # fmt: skip
    chain = cast(dict[str, JSONValue], report["chain_verification"])
    story.append(_table(
        ["Verified", "Events checked", "Broken at event"],
        [["yes" if chain["verified"] else "NO", chain["checked"], chain["brokenAtEventId"] or "none"]],
        [30, 40, 110],
    ))  # fmt: skip
    story.append(Paragraph("Latest signed checkpoint", sub))
    checkpoint = report["latest_checkpoint"]
    if isinstance(checkpoint, dict):
        story.append(_table(
            ["Tree size", "Root hash", "Published", "Key"],
            [[checkpoint.get("tree_size"), checkpoint.get("root_hash"),
              checkpoint.get("published_at"), checkpoint.get("kid")]],
            [20, 80, 40, 40],
        ))  # fmt: skip
        story.append(Paragraph(f"Signature (JWS): {checkpoint.get('signature', '')}", body))
    else:
        story.append(Paragraph("No checkpoint published yet.", body))
    story += [
        Paragraph("Key and secret rotation history", sub),
        _table(["When", "Action", "Subject", "Actor"],
               [[r["at"], r["action"], r["subject"], r["actor"]] for r in _rows(report["rotation_history"])],
               [40, 40, 60, 40]),
        Paragraph("Scheduled job runs", sub),
        _table(["Job", "Outcome", "Started"],
               [[r["job"], r["outcome"], r["started_at"]] for r in _rows(report["job_runs"])],
               [60, 40, 80]),
        Paragraph("Access review: members and roles", sub),
        _table(["Member", "Role", "Active", "Last login", "Member since"],
               [[m["username"], m["role"], "yes" if m["is_active"] else "no", m["last_login"] or "never",
                 m["member_since"]] for m in _rows(report["access_review"])],
               [45, 25, 15, 50, 45]),
    ]  # fmt: skip
    dead = cast(dict[str, JSONValue], report["dead_letters"])
    failed = cast(dict[str, JSONValue], report["failed_authentications"])
    story += [
        Paragraph("Dead letters", sub),
        Paragraph(f"Webhook deliveries dead-lettered in the period: {dead['count']}.", body),
        _table(["Delivery", "Event type", "Attempts", "Last error"],
               [[d["id"], d["event_type"], d["attempts"], d["last_error"]] for d in _rows(dead["latest"])],
               [60, 40, 20, 60]),
        Paragraph("Failed authentications", sub),
        Paragraph(f"Failed client authentications in the period: {failed['total']}.", body),
        _table(["Reason", "Count"],
               [[reason, count] for reason, count in cast(dict[str, int], failed["by_reason"]).items()],
               [120, 60]),
        Spacer(1, 6 * mm),
        Paragraph(f"Audit events in the period: {report['events_in_period']}.", body),
    ]  # fmt: skip
    buffer = io.BytesIO()
    SimpleDocTemplate(
        buffer, pagesize=A4, title=f"AgentIdP compliance report {organization['slug']}",
        leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm, bottomMargin=15 * mm,
    ).build(story)  # fmt: skip
    return buffer.getvalue()
