"""Read-only admin for the audit log (the database refuses changes anyway)."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from agentidp.admin import scoped_to_principal
from compliance.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin[AuditEvent]):
    list_display = [
        "sequence",
        "occurred_at",
        "action",
        "outcome",
        "actor_type",
        "actor_id",
        "subject_type",
        "subject_id",
        "organization",
    ]
    list_filter = ["action", "outcome", "actor_type"]
    search_fields = ["subject_id", "actor_id", "action"]
    date_hierarchy = "occurred_at"
    list_select_related = ["organization"]
    ordering = ["-occurred_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        return scoped_to_principal(request, super().get_queryset(request))

    def get_readonly_fields(self, request: HttpRequest, obj: AuditEvent | None = None) -> list[str]:
        return [field.name for field in AuditEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False
