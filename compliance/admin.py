"""Read-only admin for the audit log (the database refuses changes anyway)."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from agentidp.admin import PlatformOnly, admin_principal, scoped_to_principal
from compliance.models import AuditEvent, JobRun
from compliance.services import audit_event_hash


def _short(value: str) -> str:
    """Ids are UUIDs: the first 8 characters tell them apart on a page (the full id is on
    the event's page and in search)."""
    return value[:8] + "…" if len(value) > 12 else value


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin[AuditEvent]):
    """Compact columns, so the actor and subject fit the page; full values on each event."""

    list_filter = ["action", "outcome", "actor_type", "subject_type"]
    search_fields = ["subject_id", "actor_id", "action"]
    date_hierarchy = "occurred_at"
    list_select_related = ["organization"]
    ordering = ["-occurred_at"]
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        return scoped_to_principal(request, super().get_queryset(request))

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
