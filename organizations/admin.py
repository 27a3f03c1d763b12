"""Admin for organizations: platform superusers manage all; staff see their own only."""

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from agentidp.admin import (
    ManagedByScope,
    admin_principal,
    run_service_action,
    scoped_to_principal,
)
from organizations import services
from organizations.choices import Scope
from organizations.models import Organization, StaffMembership


class StaffMembershipInline(admin.TabularInline[StaffMembership, Organization]):
    """Staff tied to the organization; created with the ``createstaff`` command (a service)."""

    model = StaffMembership
    extra = 0
    can_delete = False
    fields = ["user", "role", "created_at"]
    readonly_fields = ["user", "role", "created_at"]

    def has_add_permission(self, request: HttpRequest, obj: Organization | None = None) -> bool:
        return False


FIELDS = (
    "id",
    "slug",
    "name",
    "plan",
    "max_agents",
    "max_tokens_per_month",
    "access_token_lifetime_seconds",
    "credential_grace_seconds",
    "did_key_algorithm",
    "status",
    "created_at",
    "updated_at",
)
CHANGE_ONLY = ("access_token_lifetime_seconds", "credential_grace_seconds", "did_key_algorithm")


@admin.register(Organization)
class OrganizationAdmin(ManagedByScope[Organization], admin.ModelAdmin[Organization]):
    """Read by the organization's members (``agents:read``), changed by its owners and admins
    (``members:write``); created by platform staff only."""

    admin_scope, write_scope = Scope.AGENTS_READ, Scope.MEMBERS_WRITE
    list_display = ["slug", "name", "plan", "status", "max_agents", "max_tokens_per_month"]
    list_filter = ["status", "plan"]
    search_fields = ["slug", "name"]
    readonly_fields = ["id", "status", "created_at", "updated_at"]
    fields = FIELDS
    inlines = [StaffMembershipInline]
    actions = ["suspend", "reactivate"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Organization]:
        organizations = super().get_queryset(request).exclude(status="deleted")
        return scoped_to_principal(request, organizations, field="id")

    def get_fields(self, request: HttpRequest, obj: Organization | None = None) -> tuple[str, ...]:
        """Token lifetime and secret grace start at their defaults; they are edited afterwards."""
        if obj is None:
            return tuple(f for f in FIELDS if f not in CHANGE_ONLY)
        return FIELDS

    def get_readonly_fields(
        self, request: HttpRequest, obj: Organization | None = None
    ) -> list[str]:
        if obj is not None:
            return [*self.readonly_fields, "slug"]
        return list(self.readonly_fields)

    def get_form(
        self,
        request: HttpRequest,
        obj: Organization | None = None,
        change: bool = False,
        **kwargs: object,
    ) -> type[forms.ModelForm[Organization]]:
        form = super().get_form(request, obj, change, **kwargs)
        for name in ("max_agents", "max_tokens_per_month"):
            if name in form.base_fields:
                form.base_fields[name].required = False
                form.base_fields[name].help_text = "Leave empty for the plan's default."
        return form

    def has_add_permission(self, request: HttpRequest) -> bool:
        return admin_principal(request).is_platform

    def has_delete_permission(self, request: HttpRequest, obj: Organization | None = None) -> bool:
        return False

    def save_model(
        self,
        request: HttpRequest,
        obj: Organization,
        form: forms.ModelForm[Organization],
        change: bool,
    ) -> None:
        principal = admin_principal(request)
        data = form.cleaned_data
        if change:
            changes = {
                name: data[name]
                for name in services.UPDATABLE_FIELDS
                if name in form.changed_data and data.get(name) is not None
            }
            updated = services.organization_update(
                actor=principal, organization_id=obj.id, changes=changes
            )
        else:
            updated = services.organization_create(
                actor=principal,
                slug=data["slug"],
                name=data["name"],
                plan=data["plan"],
                max_agents=data.get("max_agents"),
                max_tokens_per_month=data.get("max_tokens_per_month"),
            )
        obj.pk = updated.pk
        obj.refresh_from_db()

    @admin.action(permissions=["write"], description="Suspend selected organizations")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        run_service_action(
            self,
            request,
            queryset,
            lambda actor, org: services.organization_suspend(actor=actor, organization_id=org.id),
            "Suspended",
        )

    @admin.action(permissions=["write"], description="Reactivate selected organizations")
    def reactivate(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        run_service_action(
            self,
            request,
            queryset,
            lambda actor, org: services.organization_reactivate(
                actor=actor, organization_id=org.id
            ),
            "Reactivated",
        )
