"""Admin for agents and memberships; row visibility comes from RLS, filtered here too."""

from collections.abc import Callable

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from agentidp.admin import admin_principal, run_service_action, scoped_to_principal
from agentidp.errors import DomainError
from agents import services
from agents.models import Agent, OrganizationMember
from organizations.models import Organization


class AgentAdminForm(forms.ModelForm[Agent]):
    """Adds the organization choice that platform superusers need when registering."""

    organization = forms.ModelChoiceField(
        queryset=Organization.objects.exclude(status="deleted"), required=False
    )

    class Meta:
        model = Agent
        fields = ["name", "description", "capabilities", "metadata"]


def lifecycle_action(
    name: str, service: services.TransitionService, verb: str, description: str
) -> Callable[[admin.ModelAdmin[Agent], HttpRequest, QuerySet[Agent]], None]:
    """An admin action applying one lifecycle service to each selected agent."""

    def apply(
        modeladmin: admin.ModelAdmin[Agent], request: HttpRequest, queryset: QuerySet[Agent]
    ) -> None:
        run_service_action(
            modeladmin,
            request,
            queryset,
            lambda actor, agent: service(
                actor=actor, organization_id=agent.organization_id, agent_id=agent.id
            ),
            verb,
        )

    apply.__name__ = name  # the action's name in the admin's POST
    return admin.action(description=description)(apply)


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin[Agent]):
    form = AgentAdminForm
    list_display = ["name", "status", "organization", "created_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["name", "description", "id"]
    readonly_fields = ["id", "status", "created_at", "updated_at"]
    actions = [
        lifecycle_action("suspend", services.agent_suspend, "Suspended", "Suspend selected agents"),
        lifecycle_action(
            "reactivate", services.agent_reactivate, "Reactivated", "Reactivate selected agents"
        ),
        lifecycle_action(
            "decommission",
            services.agent_decommission,
            "Decommissioned",
            "Decommission selected agents (permanent)",
        ),
    ]
    list_select_related = ["organization"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        return scoped_to_principal(request, super().get_queryset(request))

    def get_fields(self, request: HttpRequest, obj: Agent | None = None) -> tuple[str, ...]:
        fields: tuple[str, ...] = ("name", "description", "capabilities", "metadata")
        if obj is None and admin_principal(request).is_platform:
            fields = ("organization", *fields)
        return (*fields, *self.readonly_fields) if obj else fields

    def has_delete_permission(self, request: HttpRequest, obj: Agent | None = None) -> bool:
        return False  # agents are decommissioned, never deleted

    def save_model(
        self, request: HttpRequest, obj: Agent, form: forms.ModelForm[Agent], change: bool
    ) -> None:
        principal = admin_principal(request)
        data = form.cleaned_data
        try:
            if change:
                changes = {name: data[name] for name in form.changed_data if name in data}
                saved = services.agent_update(
                    actor=principal,
                    organization_id=obj.organization_id,
                    agent_id=obj.id,
                    changes=changes,
                )
            else:
                organization = data.get("organization")
                organization_id = organization.id if organization else principal.organization_id
                if organization_id is None:
                    raise forms.ValidationError("Choose an organization.")
                saved = services.agent_register(
                    actor=principal,
                    organization_id=organization_id,
                    name=data["name"],
                    description=data.get("description") or "",
                    capabilities=data.get("capabilities") or [],
                    metadata=data.get("metadata") or {},
                )
        except DomainError as exc:
            raise forms.ValidationError(exc.detail) from exc
        obj.pk = saved.pk
        obj.refresh_from_db()


@admin.register(OrganizationMember)
class OrganizationMemberAdmin(admin.ModelAdmin[OrganizationMember]):
    list_display = ["agent", "role", "organization", "created_at"]
    list_filter = ["role"]
    search_fields = ["agent__name"]
    readonly_fields = ["agent", "created_at", "updated_at"]
    fields = ["agent", "role", "created_at", "updated_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[OrganizationMember]:
        members = super().get_queryset(request).select_related("agent", "organization")
        return scoped_to_principal(request, members)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # members are added through POST /organizations/{id}/members

    def save_model(
        self,
        request: HttpRequest,
        obj: OrganizationMember,
        form: forms.ModelForm[OrganizationMember],
        change: bool,
    ) -> None:
        services.member_add(
            actor=admin_principal(request),
            organization_id=obj.organization_id,
            agent_id=obj.agent_id,
            role=obj.role,
        )
