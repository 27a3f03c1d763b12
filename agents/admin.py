"""Admin for agents and memberships; row visibility comes from RLS, filtered here too."""

from collections.abc import Callable
from datetime import datetime

from django import forms
from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from agentidp.admin import (
    ManagedByScope,
    admin_principal,
    run_service_action,
    scoped_to_principal,
)
from agentidp.errors import DomainError, JSONValue
from agents import services
from agents.models import Agent, OrganizationMember
from compliance.models import AuditEvent
from credentials.models import Client, ClientSecret
from organizations.choices import DEFAULT_AGENT_SCOPES, Scope
from organizations.models import Organization


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "—"


class LinesField(forms.CharField):
    """A list of short strings edited one per line (blank lines ignored)."""

    widget = forms.Textarea(attrs={"rows": 5, "cols": 40})

    def prepare_value(self, value: object) -> object:
        if isinstance(value, list | tuple):
            return "\n".join(str(item) for item in value)
        return value

    def to_python(self, value: object) -> list[str]:  # type: ignore[override]
        text = super().to_python(value) or ""
        return [line.strip() for line in text.splitlines() if line.strip()]

    def validate(self, value: object) -> None:
        items = value if isinstance(value, list) else []
        if self.required and not items:
            raise forms.ValidationError(self.error_messages["required"], code="required")
        for item in items:
            if len(item) > MAX_CAPABILITY_LENGTH:
                raise forms.ValidationError(
                    f"{item[:20]}…: at most {MAX_CAPABILITY_LENGTH} characters per line."
                )


MAX_CAPABILITY_LENGTH = 100


class AgentAdminForm(forms.ModelForm[Agent]):
    """Capabilities one per line; the organization choice platform superusers need when
    registering."""

    organization = forms.ModelChoiceField(
        queryset=Organization.objects.exclude(status="deleted"), required=False
    )
    capabilities = LinesField(
        required=False, help_text="One capability per line, for example search or summarize."
    )

    class Meta:
        model = Agent
        fields = ["name", "description", "capabilities", "metadata", "version", "skills", "authors"]

    def clean_skills(self) -> list[JSONValue]:
        """The service's own rules, checked here so a bad list is a form error, not a crash."""
        try:
            return services.skills_checked(self.cleaned_data.get("skills") or [])
        except DomainError as exc:
            messages = [m for field in exc.errors.values() for m in field] or [exc.detail]
            raise forms.ValidationError(messages) from exc


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
    return admin.action(permissions=["write"], description=description)(apply)


RECENT_EVENTS = 10


@admin.register(Agent)
class AgentAdmin(ManagedByScope[Agent], admin.ModelAdmin[Agent]):
    """An agent with everything staff look for: its organization, the scopes it may request,
    its secrets (metadata only) and what happened to it lately. Read with ``agents:read``,
    registered, changed and suspended with ``agents:write``."""

    admin_scope, write_scope = Scope.AGENTS_READ, Scope.AGENTS_WRITE

    form = AgentAdminForm
    list_display = ["name", "status", "capability_list", "organization", "created_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["name", "description", "id"]
    readonly_fields = [
        "organization_name",
        "id",
        "status",
        "allowed_scopes",
        "credentials",
        "recent_events",
        "created_at",
        "updated_at",
    ]
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

    def get_list_display(self, request: HttpRequest) -> tuple[str, ...]:
        columns = ("name", "status", "capability_list", "organization", "created_at")
        if not admin_principal(request).is_platform:
            # one organization: a column repeating it on every row says nothing
            return tuple(c for c in columns if c != "organization")
        return columns

    def get_list_filter(self, request: HttpRequest) -> tuple[str, ...]:
        if admin_principal(request).is_platform:
            return ("organization", "status", "created_at")
        return ("status", "created_at")

    def get_fields(self, request: HttpRequest, obj: Agent | None = None) -> tuple[str, ...]:
        fields: tuple[str, ...] = (
            "name", "description", "capabilities", "metadata", "version", "skills", "authors"
        )  # fmt: skip
        if obj is None and admin_principal(request).is_platform:
            fields = ("organization", *fields)
        return (*fields, *self.readonly_fields) if obj else fields

    @admin.display(description="capabilities")
    def capability_list(self, obj: Agent) -> str:
        return ", ".join(obj.capabilities) or "—"

    @admin.display(description="organization")
    def organization_name(self, obj: Agent) -> str:
        organization = obj.organization
        return f"{organization.name} ({organization.slug})"

    @admin.display(description="allowed scopes")
    def allowed_scopes(self, obj: Agent) -> str:
        client = Client.objects.filter(organization_id=obj.organization_id, agent_id=obj.id).first()
        scopes = client.allowed_scopes if client else list(DEFAULT_AGENT_SCOPES)
        return " ".join(scopes)

    @admin.display(description="client secrets (metadata only)")
    def credentials(self, obj: Agent) -> str:
        secrets = ClientSecret.objects.filter(
            organization_id=obj.organization_id, client__agent_id=obj.id
        ).order_by("-created_at")
        now = timezone.now()
        rows = format_html_join(
            "",
            "<tr><td><code>{}…</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    secret.prefix,
                    secret.status_at(now),
                    _when(secret.created_at),
                    _when(secret.expires_at),
                    _when(secret.last_used_at),
                )
                for secret in secrets
            ),
        )
        if not rows:
            return "none"
        return format_html(
            '<table class="agentidp-detail"><thead><tr><th>prefix</th><th>status</th>'
            "<th>created</th><th>expires</th><th>last used</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description=f"recent audit events (last {RECENT_EVENTS})")
    def recent_events(self, obj: Agent) -> str:
        about_agent = Q(subject_type="agent", subject_id=str(obj.id)) | Q(
            data__agent_id=str(obj.id)
        )
        events = AuditEvent.objects.filter(
            about_agent, organization_id=obj.organization_id
        ).order_by("-sequence")[:RECENT_EVENTS]
        rows = format_html_join(
            "",
            "<tr><td>#{}</td><td>{}</td><td>{}</td><td>{}: {}</td><td>{}</td></tr>",
            (
                (
                    event.sequence,
                    _when(event.occurred_at),
                    event.action,
                    event.actor_type,
                    event.actor_id[:36],
                    event.outcome,
                )
                for event in events
            ),
        )
        if not rows:
            return "none"
        return format_html(
            '<table class="agentidp-detail"><thead><tr><th>#</th><th>when</th><th>action</th>'
            "<th>actor</th><th>outcome</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

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
class OrganizationMemberAdmin(
    ManagedByScope[OrganizationMember], admin.ModelAdmin[OrganizationMember]
):
    admin_scope, write_scope = Scope.AGENTS_READ, Scope.MEMBERS_WRITE
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
