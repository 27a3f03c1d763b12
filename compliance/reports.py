"""The compliance report for auditors, for one organization and a period: the controls with
their evidence, the chain verification and the latest signed checkpoint, key and secret
rotation history, members and roles (access review), dead letters and failed authentications.
As JSON (:func:`report_build`) and as a PDF with tables (:func:`report_pdf`, ReportLab).
"""

import io
import uuid
from collections import Counter
from datetime import datetime, timedelta
from typing import cast

from django.db.models import Count
from django.http import HttpRequest
from django.utils import timezone
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
from reportlab.platypus.flowables import Flowable

from agentidp.errors import JSONValue
from agentidp.principals import Principal
from agentidp.words import minute_utc, plural
from compliance.auditlog import Names
from compliance.checkpoints import checkpoint_document, checkpoint_latest
from compliance.controls import Control, access_review_members, controls_evaluate
from compliance.integrity import audit_integrity_verify_recorded
from compliance.models import AuditEvent, JobOutcome, JobRun
from credentials.models import ClientSecret
from organizations.models import Organization
from webhooks.choices import DeliveryStatus
from webhooks.models import WebhookDelivery

ROTATION_ACTIONS = (
    "credential.generated", "credential.rotated", "credential.revoked", "did.key_rotated",
    "webhook.secret_rotated", "signing_key.rotated",
)  # fmt: skip
REPORT_MAX_DAYS = 400
REPORT_JOBS = ("secrets-rotation", "rewrap", "audit-chain-verify", "audit-checkpoint")
AUTH_FAILURE_REASONS = {
    "bad_secret": "a wrong client secret", "unknown_client": "an unknown client_id",
    "expired_secret": "an expired client secret", "revoked_secret": "a revoked client secret",
    "inactive_agent": "a suspended or decommissioned agent",
}  # fmt: skip


def _duration(period: timedelta) -> str:
    """``52 minutes``, ``3 hours``, ``2 days``: the longest unit that fits, rounded up."""
    seconds = max(0, int(period.total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            return plural(-(-seconds // size), unit, zero="no")
    return plural(seconds, "second", zero="no")


def _verdict(controls: list[Control]) -> str:
    failing = [c.name for c in controls if not c.passing]
    if not failing:
        return f"All {len(controls)} controls pass."
    return (
        f"{len(failing)} of {len(controls)} controls fail: {', '.join(failing)}. The others pass."
    )


def _expired_secrets(organization_id: uuid.UUID, since: datetime, until: datetime) -> str:
    """What became of the secrets whose expiry or rotation grace ended in the period, in words."""
    now = timezone.now()
    ended = list(
        ClientSecret.objects.filter(
            organization_id=organization_id, expires_at__gte=since,
            expires_at__lt=min(until, now),
        ).values_list("expires_at", "revoked_at")
    )  # fmt: skip
    by_job = AuditEvent.objects.filter(
        organization_id=organization_id, occurred_at__gte=since, occurred_at__lt=until,
        action="credential.revoked", data__reason="expired",
    ).count()  # fmt: skip
    if not ended:
        return "No client secret reached its expiry or the end of its rotation grace in the period."
    late = [
        revoked - expired
        for expired, revoked in ended
        if expired is not None and revoked is not None and revoked >= expired
    ]
    unrevoked = sum(1 for _, revoked in ended if revoked is None)
    sentence = (
        f"{plural(len(ended), 'client secret', zero='no')} reached {'its' if len(ended) == 1 else 'their'}"
        " expiry or the end of a rotation grace in the period"
    )
    if late:
        sentence += (
            f"; {len(late)} revoked after expiring ({by_job} by the rotation job), the slowest"
            f" within {_duration(max(late))} of expiring"
        )
    if len(ended) - unrevoked - len(late):
        sentence += f"; {len(ended) - unrevoked - len(late)} had been revoked before they expired"
    sentence += f"; {unrevoked} still unrevoked." if unrevoked else "; none is left unrevoked."
    return sentence


def _job_summaries(runs: list[JobRun]) -> list[dict[str, JSONValue]]:
    by_job: dict[str, list[JobRun]] = {}
    for run in runs:
        by_job.setdefault(run.job, []).append(run)
    summaries: list[dict[str, JSONValue]] = []
    for job in REPORT_JOBS:
        mine = by_job.get(job, [])
        failed = [r for r in mine if r.outcome != JobOutcome.SUCCESS]
        if not mine:
            sentence = f"{job} did not run in the period."
        else:
            sentence = (
                f"{job} ran {plural(len(mine), 'time', zero='no')}, {len(mine) - len(failed)} succeeded"
                + (f" and {len(failed)} failed (the latest failure at {minute_utc(failed[0].started_at)})"
                   if failed else "")
                + f"; the latest run started at {minute_utc(mine[0].started_at)}."
            )  # fmt: skip
        summaries.append({
            "job": job, "runs": len(mine), "failed": len(failed), "sentence": sentence,
        })  # fmt: skip
    return summaries


def _run_summary(run: JobRun) -> str:
    detail = run.detail if isinstance(run.detail, dict) else {}
    for key in ("summary", "error"):
        if detail.get(key):
            return str(detail[key])[:200]
    if run.job == "secrets-rotation":
        revoked = detail.get("credentials_expired_revoked")
        count = sum(int(str(n)) for n in revoked.values()) if isinstance(revoked, dict) else 0
        return f"{plural(count, 'expired secret', zero='no')} revoked"
    if run.job == "audit-chain-verify":
        return f"{plural(int(str(detail.get('checked') or 0)), 'event', zero='no')} verified"
    return ""


def report_build(
    *,
    organization_id: uuid.UUID,
    since: datetime,
    until: datetime,
    actor: Principal,
    request: HttpRequest | None = None,
) -> dict[str, JSONValue]:
    """The report as JSON, read in the organization's context (the log is verified as it is
    built, recorded as a verification by ``actor``): a summary (the verdict, each control
    with its evidence in a sentence, the checkpoint it was computed against), then the
    details, every job run of the period included."""
    organization = Organization.objects.get(id=organization_id)
    events = AuditEvent.objects.filter(
        organization_id=organization_id, occurred_at__gte=since, occurred_at__lt=until
    )
    verification = audit_integrity_verify_recorded(
        organization_id=organization_id, actor=actor, source="report"
    )
    checkpoint = checkpoint_latest(organization_id=organization_id)
    rotated = list(events.filter(action__in=ROTATION_ACTIONS).order_by("occurred_at"))
    names = Names.of(rotated)
    rotations: list[JSONValue] = [
        {"at": e.occurred_at.isoformat(), "action": e.action, "subject": f"{e.subject_type} {e.subject_id}",
         "actor": names.actor(e),
         "reason": str(e.data.get("reason", "")) if isinstance(e.data, dict) else ""}
        for e in rotated
    ]  # fmt: skip
    run_rows = list(
        JobRun.objects.filter(job__in=REPORT_JOBS, started_at__gte=since, started_at__lt=until)
        .filter(organization_ref__in=[organization_id, None])
        .order_by("-started_at")
    )
    runs: list[JSONValue] = [
        {"job": r.job, "outcome": r.outcome, "started_at": r.started_at.isoformat(),
         "finished_at": r.finished_at.isoformat(), "summary": _run_summary(r)}
        for r in run_rows
    ]  # fmt: skip
    failed = Counter[str]()
    for reason, n in (
        events.filter(action="auth.failed").values_list("data__reason").annotate(n=Count("id"))
    ):
        failed[str(reason)] += int(n)
    dead = WebhookDelivery.objects.filter(
        organization_id=organization_id,
        status=DeliveryStatus.DEAD_LETTER,
        completed_at__gte=since,
        completed_at__lt=until,
    )
    dead_count = dead.count()
    controls = controls_evaluate(organization_id=organization_id, request=request)
    total_failed = sum(failed.values())
    return {
        "organization": {
            "id": str(organization.id),
            "slug": organization.slug,
            "name": organization.name,
        },
        "period": {"from": since.isoformat(), "to": until.isoformat()},
        "generated_at": timezone.now().isoformat(),
        "verdict": "pass" if all(c.passing for c in controls) else "fail",
        "verdict_sentence": _verdict(controls),
        "controls": [c.as_document() for c in controls],
        "all_passing": all(c.passing for c in controls),
        "chain_verification": verification.as_document(),
        "latest_checkpoint": checkpoint_document(checkpoint) if checkpoint else None,
        "rotation_history": rotations,
        "expired_secrets": _expired_secrets(organization_id, since, until),
        "job_runs": runs,
        "job_summaries": list[JSONValue](_job_summaries(run_rows)),
        "access_review": list[JSONValue](access_review_members(organization_id)),
        "dead_letters": {
            "count": dead_count,
            "sentence": (
                f"{plural(dead_count, 'webhook delivery', 'webhook deliveries', zero='no')} dead-lettered"
                " in the period (every retry failed; staff replay them from the admin)."
            ),
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
            "total": total_failed,
            "by_reason": dict[str, JSONValue](failed.most_common()),
            "sentence": (
                f"{plural(total_failed, 'failed client authentication', zero='no')} in the period"
                + (
                    ": "
                    + "; ".join(
                        f"{n} with {AUTH_FAILURE_REASONS.get(reason, reason)} ({reason})"
                        for reason, n in failed.most_common()
                    )
                    + "."
                    if total_failed
                    else "."
                )
            ),  # fmt: skip
        },
        "events_in_period": events.count(),
    }


# --- the PDF ---------------------------------------------------------------------------------

_STYLES = getSampleStyleSheet()
# Never split a word across lines: a column too narrow for a word widens the table instead
# ("Passin g" was the bug).
_BODY = ParagraphStyle("ReportBody", parent=_STYLES["BodyText"], fontSize=9, leading=11.5,
                       splitLongWords=False, hyphenationLang="")  # fmt: skip
_SMALL = ParagraphStyle("ReportSmall", parent=_BODY, fontSize=8, leading=10)
_MONO = ParagraphStyle("ReportMono", parent=_SMALL, fontName="Courier", splitLongWords=True)
_HEAD = ParagraphStyle("ReportHead", parent=_SMALL, fontName="Helvetica-Bold")
_VERDICT = ParagraphStyle("Verdict", parent=_BODY, fontSize=13, leading=17, spaceBefore=4,
                          spaceAfter=6, fontName="Helvetica-Bold")  # fmt: skip
_GRID = TableStyle([
    ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8ecf2")),
    ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
    ("FONTSIZE", (0, 0), (-1, -1), 8),
    ("VALIGN", (0, 0), (-1, -1), "TOP"),
])  # fmt: skip
_LONG_GRID = TableStyle([*_GRID.getCommands(), ("FONTSIZE", (0, 0), (-1, -1), 7)])


def _escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _para(text: str, style: ParagraphStyle = _BODY) -> Paragraph:
    return Paragraph(_escaped(text), style)


def _table(
    header: list[str], rows: list[list[str]], widths: list[float], *, plain: bool = False
) -> Table:
    """A table that repeats its header on every page. ``plain`` cells are strings, not
    paragraphs (fast for the long lists: one line each)."""
    head = [Paragraph(_escaped(h), _HEAD) for h in header]
    if not rows:
        rows = [["none", *([""] * (len(header) - 1))]]
    body: list[list[object]] = (
        [list(row) for row in rows] if plain
        else [[_para(cell, _SMALL) for cell in row] for row in rows]
    )  # fmt: skip
    table = Table([head, *body], colWidths=[w * mm for w in widths], repeatRows=1)
    table.setStyle(_LONG_GRID if plain else _GRID)
    return table


def _label(key: str) -> str:
    return key.replace("_", " ").capitalize()


def _flatten(value: JSONValue, prefix: str = "") -> list[list[str]]:
    """Evidence as rows of (what, value) in words: nested objects become their paths, lists
    are joined, nothing is a JSON dump."""
    if isinstance(value, dict):
        rows: list[list[str]] = []
        for key, item in value.items():
            label = f"{prefix}: {_label(key)}" if prefix else _label(key)
            if isinstance(item, dict) and item:
                rows += _flatten(item, label)
            elif isinstance(item, list) and item and all(isinstance(i, dict) for i in item):
                for index, entry in enumerate(item, 1):
                    rows += _flatten(entry, f"{label} {index}")
            else:
                rows.append([label, _scalar(item)])
        return rows
    return [[prefix or "Value", _scalar(value)]]


def _scalar(value: JSONValue) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_scalar(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return (
            "none"
            if not value
            else "; ".join(f"{_label(k)}: {_scalar(v)}" for k, v in value.items())
        )
    return str(value)


def _when_text(value: JSONValue) -> str:
    if not value:
        return "never"
    return minute_utc(datetime.fromisoformat(str(value)))


def _summary_page(report: dict[str, JSONValue]) -> list[Flowable]:
    organization = cast(dict[str, str], report["organization"])
    period = cast(dict[str, str], report["period"])
    controls = _rows(report["controls"])
    checkpoint = report["latest_checkpoint"]
    story: list[Flowable] = [
        Paragraph(_escaped(f"Compliance report: {organization['name']}"), _STYLES["Title"]),
        _table(["Organization", "Period", "Generated"], [[
            f"{organization['name']} ({organization['slug']}), id {organization['id']}",
            f"{_when_text(period['from'])} to {_when_text(period['to'])}",
            _when_text(report["generated_at"]),
        ]], [80, 60, 40]),
        Paragraph(
            _escaped(f"Verdict: {'PASS' if report['verdict'] == 'pass' else 'FAIL'}. "
                     f"{report['verdict_sentence']}"), _VERDICT,
        ),
        _table(
            ["Control", "Result", "Evidence"],
            [[f"{c['name']} ({', '.join(cast(list[str], c['criteria']))})",
              "Pass" if c["passing"] else "Fail",
              (f"{c['detail']} " if c["detail"] else "") + str(c["summary"])]
             for c in controls],
            [46, 14, 120],
        ),
        Spacer(1, 4 * mm),
    ]  # fmt: skip
    if isinstance(checkpoint, dict):
        story += [
            _para(
                f"Computed against signed checkpoint number {checkpoint.get('number')}: a Merkle"
                f" tree of {plural(int(str(checkpoint.get('tree_size'))), 'audit event', zero='no')},"
                f" signed at {_when_text(checkpoint.get('published_at'))} with key"
                f" {checkpoint.get('kid')}. Its root hash (SHA-256):"
            ),
            _para(str(checkpoint.get("root_hash")), _MONO),
        ]
    else:
        story.append(_para("No checkpoint of the audit log has been signed yet."))
    chain = cast(dict[str, JSONValue], report["chain_verification"])
    story.append(_para(
        f"The audit log was verified as this report was made: {plural(int(str(chain['checked'])), 'event', zero='no')}"
        f" checked, {'no alteration found' if chain['verified'] else 'ALTERED: see Audit log integrity'}."
        " The details, the definitions of the controls and every scheduled job run of the period"
        " follow on the next pages."
    ))  # fmt: skip
    return story


def _rows(value: JSONValue) -> list[dict[str, JSONValue]]:
    return [cast(dict[str, JSONValue], r) for r in value] if isinstance(value, list) else []


def report_pdf(report: dict[str, JSONValue]) -> bytes:
    """The report as a PDF an auditor can hand on: the summary page, then each control's
    definition and evidence, the log's verification and checkpoint, rotation, access review,
    dead letters, failed authentications and every job run of the period, as tables."""
    organization = cast(dict[str, str], report["organization"])
    sub, third = _STYLES["Heading2"], _STYLES["Heading3"]
    story = _summary_page(report)
    story += [PageBreak(), Paragraph("The controls in detail", sub)]
    for control in _rows(report["controls"]):
        definition = cast(dict[str, str], control.get("definition") or {})
        story += [
            Paragraph(_escaped(f"{control['name']}: {'pass' if control['passing'] else 'FAIL'}"), third),
            _para(f"Checks: {definition.get('checks', '')}"),
            _para(f"Kept true by: {definition.get('kept_true_by', '')}"),
            _para(f"Fails when: {definition.get('fails_when', '')}"),
        ]  # fmt: skip
        if control["detail"]:
            story.append(_para(f"Cause of failure: {control['detail']}"))
        story.append(_table(["Evidence", "Value"], _flatten(control["evidence"]), [70, 110]))
    checkpoint = report["latest_checkpoint"]
    story.append(Paragraph("Audit log verification and the latest signed checkpoint", sub))
    chain = cast(dict[str, JSONValue], report["chain_verification"])
    story.append(_table(["Evidence", "Value"], _flatten(chain), [70, 110]))
    if isinstance(checkpoint, dict):
        story += [
            Spacer(1, 3 * mm),
            _table(["Checkpoint", "Value"], [[_label(k), _scalar(v)] for k, v in checkpoint.items()
                   if k not in ("signature", "public_jwk")], [50, 130]),
            _para("Signature (compact JWS, verify with the key in the JWKS or beside it):", _SMALL),
            _para(str(checkpoint.get("signature", "")), _MONO),
        ]  # fmt: skip
    story += [
        Paragraph("Key and secret rotation", sub),
        _para(str(report["expired_secrets"])),
        _table(["When", "Action", "Subject", "By", "Reason"],
               [[_when_text(r["at"]), str(r["action"]), str(r["subject"]), str(r["actor"]),
                 str(r["reason"])] for r in _rows(report["rotation_history"])],
               [30, 34, 62, 36, 18]),
        Paragraph("Access review: members and roles", sub),
        _table(["Member", "Role", "Active", "Last login", "Member since"],
               [[str(m["username"]), str(m["role"]), "yes" if m["is_active"] else "no",
                 _when_text(m["last_login"]), _when_text(m["member_since"])]
                for m in _rows(report["access_review"])],
               [50, 25, 15, 45, 45]),
    ]  # fmt: skip
    dead = cast(dict[str, JSONValue], report["dead_letters"])
    failed = cast(dict[str, JSONValue], report["failed_authentications"])
    story += [
        Paragraph("Dead letters", sub),
        _para(str(dead["sentence"])),
        _table(["Delivery", "Event type", "Attempts", "Last error"],
               [[str(d["id"]), str(d["event_type"]), str(d["attempts"]), str(d["last_error"])]
                for d in _rows(dead["latest"])],
               [62, 40, 18, 60]),
        Paragraph("Failed authentications", sub),
        _para(str(failed["sentence"])),
        _para(f"Audit events recorded in the period: {report['events_in_period']}."),
        Paragraph("Scheduled job runs", sub),
    ]  # fmt: skip
    story += [_para(str(s["sentence"])) for s in _rows(report["job_summaries"])]
    story += [
        Spacer(1, 3 * mm),
        _table(["Job", "Outcome", "Started", "Finished", "Summary"],
               [[str(r["job"]), str(r["outcome"]), _when_text(r["started_at"]),
                 _when_text(r["finished_at"]), str(r["summary"])[:70]]
                for r in _rows(report["job_runs"])],
               [28, 16, 30, 30, 76], plain=True),
    ]  # fmt: skip
    buffer = io.BytesIO()

    def numbered(canvas: object, document: object) -> None:
        from reportlab.pdfgen.canvas import Canvas

        page = cast(Canvas, canvas)
        page.setFont("Helvetica", 7)
        page.drawRightString(
            195 * mm, 8 * mm,
            f"AgentIdP compliance report, {organization['slug']}, page {page.getPageNumber()}",
        )  # fmt: skip

    SimpleDocTemplate(
        buffer, pagesize=A4, title=f"AgentIdP compliance report {organization['slug']}",
        leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm, bottomMargin=15 * mm,
    ).build(story, onFirstPage=numbered, onLaterPages=numbered)  # fmt: skip
    return buffer.getvalue()
