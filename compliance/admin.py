"""Read-only admin for the audit log (the database refuses changes anyway), the job runs and
the auditors' report page."""

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import cast

from django.contrib import admin
from django.contrib.admin import ListFilter
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseBase,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from agentidp.admin import ManagedByScope, PlatformOnly, admin_principal, scoped_to_principal
from agentidp.principals import Principal
from agentidp.tenancy import platform_context, tenant_context
from compliance.auditlog import (
    ActorFilter,
    AuditChangeList,
    Checkpoints,
    DateRangeFilter,
    Names,
    SubjectFilter,
    export_response,
    id_code,
    subject_url,
)
from compliance.controls import controls_evaluate
from compliance.models import AuditEvent, JobRun
from compliance.reports import REPORT_MAX_DAYS, report_build, report_pdf
from compliance.services import audit_event_hash
from organizations.choices import Scope
from organizations.models import Organization


@admin.register(AuditEvent)
class AuditEventAdmin(ManagedByScope[AuditEvent], admin.ModelAdmin[AuditEvent]):
    """The audit log as a person reads it: who acted by name and role, what, on which subject
    (its whole id, linked), whether the row still matches its hash; filters by action, actor,
    subject and dates; the filtered events exported for offline verification. Read with
    ``audit:read`` (owners, admins and auditors); nobody changes an event."""

    admin_scope = Scope.AUDIT_READ

    search_fields = ["subject_id", "actor_id", "action", "data__actor__username"]
    date_hierarchy = "occurred_at"
    list_select_related = ["organization"]
    ordering = ["-occurred_at"]
    list_per_page = 50
    list_display_links = ["sequence"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        return scoped_to_principal(request, super().get_queryset(request))

    def get_changelist(self, request: HttpRequest, **kwargs: object) -> type[ChangeList]:
        return AuditChangeList

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("report/", wrap(ComplianceReportAdmin.view), name="compliance_report"),
            path("export.<str:fmt>", wrap(self.export_view), name="compliance_auditevent_export"),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, object] | None = None
    ) -> HttpResponse:
        query = request.GET.urlencode()
        export = reverse("admin:compliance_auditevent_export", args=["csv"])
        context = {
            **(extra_context or {}),
            "report_allowed": ComplianceReportAdmin.allowed(request),
            "export_csv": f"{export}?{query}" if query else export,
            "export_jsonl": export.replace(".csv", ".jsonl") + (f"?{query}" if query else ""),
            "is_nav_sidebar_enabled": False,  # the log's columns need the page's width
        }
        return super().changelist_view(request, context)

    def export_view(self, request: HttpRequest, fmt: str) -> HttpResponseBase:
        """The events the list shows with the same filters and search, every page of them."""
        if fmt not in ("csv", "jsonl"):
            raise Http404("CSV or JSON Lines.")
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("Unknown filter.")
        events = changelist.get_queryset(request)
        principal = admin_principal(request)
        moment = f"{timezone.now():%Y%m%dT%H%M%SZ}"
        organization_id = principal.organization_id
        if principal.is_platform or organization_id is None:
            return export_response(
                events, fmt=fmt, name=f"agentidp-audit-{moment}",
                scope=partial(platform_context, reason="admin:audit-export", actor=principal),
            )  # fmt: skip
        slug = Organization.objects.values_list("slug", flat=True).get(id=organization_id)
        return export_response(
            events, fmt=fmt, name=f"agentidp-audit-{slug}-{moment}",
            scope=partial(tenant_context, organization_id),
        )  # fmt: skip

    def get_list_display(self, request: HttpRequest) -> tuple[str, ...]:
        columns = ("sequence", "when", "action", "outcome", "actor", "subject", "integrity")
        if admin_principal(request).is_platform:
            return (*columns, "organization_slug")
        return columns

    def get_list_filter(self, request: HttpRequest) -> tuple[type[ListFilter] | str, ...]:
        filters = ("action", ActorFilter, SubjectFilter, DateRangeFilter, "outcome")
        if admin_principal(request).is_platform:
            return ("organization", *filters)
        return filters

    def _names(self, event: AuditEvent) -> Names:
        names = getattr(event, "names", None)
        return names if isinstance(names, Names) else Names.of([event])

    @admin.display(description="#", ordering="sequence")
    def sequence(self, event: AuditEvent) -> int:
        return event.sequence

    @admin.display(description="when (UTC)", ordering="occurred_at")
    def when(self, event: AuditEvent) -> str:
        return event.occurred_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="actor")
    def actor(self, event: AuditEvent) -> str:
        query = urlencode({"actor": f"{event.actor_type}:{event.actor_id}"})
        return format_html(
            '<a href="?{}" title="{}: {}">{}</a>', query, event.actor_type, event.actor_id,
            self._names(event).actor(event),
        )  # fmt: skip

    @admin.display(description="subject")
    def subject(self, event: AuditEvent) -> str:
        names = self._names(event)
        name = names.subject_name(event)
        return format_html(
            '<span class="agentidp-kind">{}{}</span><br><a href="{}">{}</a>',
            event.subject_type.replace("_", " "), f" {name}" if name else "",
            subject_url(event, platform=names.platform), id_code(event.subject_id),
        )  # fmt: skip

    @admin.display(description="organization")
    def organization_slug(self, event: AuditEvent) -> str:
        return self._names(event).organizations.get(str(event.organization_id), "")

    # --- one event's page -------------------------------------------------------------------

    @admin.display(description="actor")
    def actor_shown(self, event: AuditEvent) -> str:
        return format_html(
            "{}<br>{}",
            Names.of([event]).actor(event),
            id_code(f"{event.actor_type}:{event.actor_id}"),
        )

    @admin.display(description="subject")
    def subject_shown(self, event: AuditEvent) -> str:
        names = Names.of([event], platform=True)
        query = urlencode({"subject": f"{event.subject_type}:{event.subject_id}"})
        events = f"{reverse('admin:compliance_auditevent_changelist')}?{query}"
        return format_html(
            '{} {} (<a href="{}">its page</a>, <a href="{}">its events</a>)',
            event.subject_type.replace("_", " "), id_code(event.subject_id),
            subject_url(event, platform=names.platform), events,
        )  # fmt: skip

    @admin.display(description="data")
    def data_shown(self, event: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event.data, indent=2, sort_keys=True))

    @admin.display(description="inclusion proof")
    def proof_reference(self, event: AuditEvent) -> str:
        checkpoint = Checkpoints().first_holding(event)
        if checkpoint is None:
            return "In the next signed checkpoint (the checkpoint job signs one every hour)."
        return format_html(
            "leaf {} of checkpoint #{} (tree size {}, root {}): GET {}",
            event.sequence - 1, checkpoint.number, checkpoint.tree_size,
            id_code(checkpoint.root_hash),
            id_code(f"/audit/{event.id}/proof?tree_size={checkpoint.tree_size}"),
        )  # fmt: skip

    @admin.display(description="integrity")
    def integrity(self, event: AuditEvent) -> str:
        """Whether the row still matches its own hash (the whole chain: verifyauditchain)."""
        return "ok" if audit_event_hash(event) == event.hash else "ALTERED"

    fields = (
        "sequence", "id", "occurred_at", "organization", "action", "outcome", "actor_shown",
        "subject_shown", "data_shown", "previous_hash", "hash", "integrity", "proof_reference",
    )  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False


@admin.register(JobRun)
class JobRunAdmin(PlatformOnly[JobRun], admin.ModelAdmin[JobRun]):
    """Every recorded run of the scheduled compliance jobs, with its outcome and findings
    (the schedules themselves are under Periodic tasks)."""

    list_display = ["job", "outcome", "started_at", "finished_at", "organization"]
    list_filter = ["job", "outcome"]
    search_fields = ["job", "organization_ref"]
    date_hierarchy = "started_at"
    fields = ("job", "organization", "organization_ref", "started_at", "finished_at", "outcome",
              "detail")  # fmt: skip
    readonly_fields = fields

    def get_changelist(self, request: HttpRequest, **kwargs: object) -> type[ChangeList]:
        return JobRunChangeList

    @admin.display(description="organization", ordering="organization_ref")
    def organization(self, run: JobRun) -> str:
        """The organization's slug (a deployment-wide run says so)."""
        if run.organization_ref is None:
            return "the whole deployment"
        slug = getattr(run, "organization_slug", None)
        if slug is None:
            slug = organization_slugs([run.organization_ref]).get(str(run.organization_ref))
        return slug or str(run.organization_ref)


def organization_slugs(ids: Iterable[uuid.UUID | None]) -> dict[str, str]:
    wanted = {i for i in ids if i is not None}
    with platform_context(reason="admin:job-runs"):
        rows = Organization.objects.filter(id__in=wanted).values_list("id", "slug")
        return {str(pk): slug for pk, slug in rows}


class JobRunChangeList(ChangeList):
    """The page's runs with their organizations' slugs, looked up once per page."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        slugs = organization_slugs(run.organization_ref for run in self.result_list)
        for run in self.result_list:
            run.organization_slug = slugs.get(str(run.organization_ref))


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
