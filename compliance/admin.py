"""Read-only admin for the audit log (the database refuses changes anyway)."""

import json
from datetime import date, datetime, time, timedelta
from typing import cast

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone

from agentidp.admin import ManagedByScope, PlatformOnly, admin_principal, scoped_to_principal
from agentidp.principals import Principal
from compliance.controls import controls_evaluate
from compliance.models import AuditEvent, JobRun
from compliance.reports import REPORT_MAX_DAYS, report_build, report_pdf
from compliance.services import audit_event_hash
from organizations.choices import Scope
from organizations.models import Organization


def _short(value: str) -> str:
    """Ids are UUIDs: the first 8 characters tell them apart on a page (the full id is on
    the event's page and in search)."""
    return value[:8] + "…" if len(value) > 12 else value


@admin.register(AuditEvent)
class AuditEventAdmin(ManagedByScope[AuditEvent], admin.ModelAdmin[AuditEvent]):
    """Compact columns, so the actor and subject fit the page; full values on each event. Read
    with ``audit:read`` (owners, admins and auditors); nobody changes an event."""

    admin_scope = Scope.AUDIT_READ

    list_filter = ["action", "outcome", "actor_type", "subject_type"]
    search_fields = ["subject_id", "actor_id", "action"]
    date_hierarchy = "occurred_at"
    list_select_related = ["organization"]
    ordering = ["-occurred_at"]
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        return scoped_to_principal(request, super().get_queryset(request))

    def get_urls(self) -> list[URLPattern]:
        report = path(
            "report/",
            self.admin_site.admin_view(ComplianceReportAdmin.view),
            name="compliance_report",
        )
        return [report, *super().get_urls()]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, object] | None = None
    ) -> HttpResponse:
        context = {
            **(extra_context or {}),
            "report_allowed": ComplianceReportAdmin.allowed(request),
        }
        return super().changelist_view(request, context)

    def get_list_display(self, request: HttpRequest) -> tuple[str, ...]:
        columns = ("sequence", "when", "action", "outcome", "actor", "subject", "integrity")
        if admin_principal(request).is_platform:
            return (*columns, "organization")
        return columns

    def get_list_filter(self, request: HttpRequest) -> tuple[str, ...]:
        filters = ("action", "outcome", "actor_type", "subject_type")
        if admin_principal(request).is_platform:
            return ("organization", *filters)
        return filters

    @admin.display(description="when", ordering="occurred_at")
    def when(self, event: AuditEvent) -> str:
        return event.occurred_at.strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="actor")
    def actor(self, event: AuditEvent) -> str:
        return f"{event.actor_type} {_short(event.actor_id)}"

    @admin.display(description="subject")
    def subject(self, event: AuditEvent) -> str:
        return f"{event.subject_type} {_short(event.subject_id)}"

    @admin.display(description="integrity")
    def integrity(self, event: AuditEvent) -> str:
        """Whether the row still matches its own hash (the whole chain: verifyauditchain)."""
        return "ok" if audit_event_hash(event) == event.hash else "ALTERED"

    def get_readonly_fields(self, request: HttpRequest, obj: AuditEvent | None = None) -> list[str]:
        return [field.name for field in AuditEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False


@admin.register(JobRun)
class JobRunAdmin(PlatformOnly, admin.ModelAdmin[JobRun]):
    """Every recorded run of the scheduled compliance jobs, with its outcome and findings
    (the schedules themselves are under Periodic tasks)."""

    list_display = ["job", "outcome", "started_at", "finished_at", "organization_ref"]
    list_filter = ["job", "outcome"]
    search_fields = ["job", "organization_ref"]
    date_hierarchy = "started_at"
    readonly_fields = [
        "job", "organization_ref", "started_at", "finished_at", "outcome", "detail"
    ]  # fmt: skip


class ComplianceReportAdmin:
    """The auditors' page: controls now, and the period's report as PDF or JSON. Linked from
    the audit events list; open to any member whose role reads the audit log (auditors,
    owners, admins), for their own organization."""

    @staticmethod
    def allowed(request: HttpRequest) -> bool:
        principal = getattr(request, "principal", None)
        return (
            isinstance(principal, Principal)
            and principal.organization_id is not None
            and Scope.AUDIT_READ in principal.scopes
        )

    @classmethod
    def view(cls, request: HttpRequest) -> HttpResponse:
        if not cls.allowed(request):
            raise PermissionDenied
        principal = admin_principal(request)
        organization_id = principal.organization_id
        assert organization_id is not None  # noqa: S101 - allowed() checked it
        context: dict[str, object] = {
            **admin.site.each_context(request), "title": "Compliance report",
            "organization": Organization.objects.get(id=organization_id),
        }  # fmt: skip
        download = request.GET.get("download")
        if download in ("pdf", "json"):
            period = _period(request.GET.get("since", ""), request.GET.get("until", ""))
            if isinstance(period, str):
                context["error"] = period
            else:
                report = report_build(
                    organization_id=organization_id,
                    since=period[0],
                    until=period[1],
                    actor=principal,
                    request=request,
                )
                slug = str(cast(dict[str, str], report["organization"])["slug"])
                if download == "pdf":
                    response = HttpResponse(report_pdf(report), content_type="application/pdf")
                else:
                    body = json.dumps(report, indent=2, sort_keys=True)
                    response = HttpResponse(body, content_type="application/json")
                response["Content-Disposition"] = (
                    f'attachment; filename="agentidp-compliance-{slug}.{download}"'
                )
                response["Cache-Control"] = "no-store"
                return response
        today = timezone.localdate()
        context.update(
            since=request.GET.get("since") or (today - timedelta(days=30)).isoformat(),
            until=request.GET.get("until") or today.isoformat(),
            controls=[c.as_document() for c in controls_evaluate(
                organization_id=organization_id, request=request
            )],
        )  # fmt: skip
        return TemplateResponse(request, "admin/compliance/report.html", context)


def _period(since: str, until: str) -> tuple[datetime, datetime] | str:
    """The dates the form sent (``until`` inclusive), or why they are refused."""
    try:
        start = date.fromisoformat(since) if since else timezone.localdate() - timedelta(days=30)
        end = date.fromisoformat(until) if until else timezone.localdate()
    except ValueError:
        return "Dates must be YYYY-MM-DD."
    if start > end or (end - start).days > REPORT_MAX_DAYS:
        return f"The period must run forwards and span at most {REPORT_MAX_DAYS} days."
    zone = timezone.get_current_timezone()
    return (
        datetime.combine(start, time.min, tzinfo=zone),
        datetime.combine(end + timedelta(days=1), time.min, tzinfo=zone),
    )
