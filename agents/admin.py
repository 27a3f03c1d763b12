"""Admin for agents and memberships; row visibility comes from RLS, filtered here too."""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, cast

from django import forms
from django.contrib import admin, messages
from django.db.models import DateTimeField, ExpressionWrapper, F, Q, QuerySet
from django.db.models.expressions import CombinedExpression
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import slugify

from agentidp.admin import (
    ManagedByScope,
    ServiceSaves,
    action_hidden_fields,
    admin_principal,
    confirmation_page,
    confirmed,
    organization_choice,
    run_service_action,
    scoped_to_principal,
    shown_once_page,
)
from agentidp.errors import DomainError, JSONValue, ValidationFailed
from agentidp.principals import Principal
from agentidp.words import plural
from agents import services
from agents.choices import AgentStatus
from agents.models import ANY_ACTOR, Agent, OrganizationMember
from compliance.models import AuditEvent
from credentials import services as credential_services
from credentials.models import Client, ClientSecret
from oidc.selectors import live_tokens_count
from oidc.services import agent_tokens_revoke
from organizations.choices import AGENT_SCOPES, DEFAULT_AGENT_SCOPES, Scope
from organizations.models import Organization, StaffMembership


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


class SkillsField(forms.CharField):
    """Agent-card skills, one a line: ``name: what it does [tag, tag]`` (the description and
    the tags optional). A skill keeps its id while its name stays; a new one gets the slug of
    its name."""

    widget = forms.Textarea(attrs={"rows": 5, "cols": 60})
    known_ids: dict[str, str]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.known_ids = {}

    def prepare_value(self, value: object) -> object:
        if not isinstance(value, list):
            return value
        lines = []
        for skill in value:
            if not isinstance(skill, dict):
                continue
            line = str(skill.get("name", ""))
            if skill.get("description"):
                line += f": {skill['description']}"
            tags = skill.get("tags")
            if isinstance(tags, list) and tags:
                line += f" [{', '.join(str(t) for t in tags)}]"
            lines.append(line)
        return "\n".join(lines)

    def to_python(self, value: object) -> list[JSONValue]:  # type: ignore[override]
        if isinstance(value, list):
            return list(value)
        text = super().to_python(value) or ""
        skills: list[JSONValue] = []
        used: set[str] = set()
        for line in (raw.strip() for raw in text.splitlines()):
            if not line:
                continue
            tags: list[str] = []
            if line.endswith("]") and "[" in line:
                line, _, tag_text = line[:-1].rpartition("[")
                tags = [t.strip() for t in tag_text.split(",") if t.strip()]
            name, _, description = (part.strip() for part in line.partition(":"))
            if not name:
                raise forms.ValidationError(f"{line[:40]}…: a skill needs a name before the colon.")
            skill_id = self.known_ids.get(name) or slugify(name)[:100] or "skill"
            base, n = skill_id, 2
            while skill_id in used:
                skill_id, n = f"{base}-{n}", n + 1
            used.add(skill_id)
            skill: dict[str, JSONValue] = {"id": skill_id, "name": name}
            if description:
                skill["description"] = description
            if tags:
                skill["tags"] = list(tags)
            skills.append(skill)
        return skills


class AgentAdminForm(forms.ModelForm[Agent]):
    """Capabilities one per line; the organization choice platform superusers need when
    registering."""

    for_organization = forms.ModelChoiceField(
        queryset=Organization.objects.none(), required=False, label="Organization"
    )
    capabilities = LinesField(
        required=False, help_text="One capability per line, for example search or summarize."
    )
    skills = SkillsField(
        required=False,
        help_text="What the agent card lists, one skill a line: name: what it does [tag, tag] "
        "(for example invoice-lookup: finds an invoice by number [billing, read]).",
    )
    # its choices (the organization's people) are set per request by AgentAdmin.get_form
    sponsor_username = forms.ChoiceField(required=False, choices=[], label="Sponsor")

    class Meta:
        model = Agent
        fields = ["name", "description", "capabilities", "metadata", "version", "skills", "authors"]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if self.instance.pk is not None:
            self.initial.setdefault("sponsor_username", self.instance.sponsor_username or "")
        field = self.fields["skills"]
        if isinstance(field, SkillsField) and isinstance(self.instance.skills, list):
            field.known_ids = {
                str(s["name"]): str(s["id"]) for s in self.instance.skills
                if isinstance(s, dict) and "name" in s and "id" in s
            }  # fmt: skip

    def clean_skills(self) -> list[JSONValue]:
        """The service's own rules, checked here so a bad list is a form error, not a crash."""
        try:
            return services.skills_checked(self.cleaned_data.get("skills") or [])
        except DomainError as exc:
            messages = [m for field in exc.errors.values() for m in field] or [exc.detail]
            raise forms.ValidationError(messages) from exc


def _active_secrets(agent_ids: list[uuid.UUID], organization_id: uuid.UUID) -> int:
    now = timezone.now()
    return (
        ClientSecret.objects.filter(
            organization_id=organization_id, client__agent_id__in=agent_ids, revoked_at=None
        )
        .filter(Q(expires_at=None) | Q(expires_at__gt=now))
        .count()
    )


class AgentService(Protocol):
    def __call__(
        self, *, actor: Principal, organization_id: uuid.UUID, agent_id: uuid.UUID
    ) -> object: ...


@dataclass(frozen=True)
class Transition:
    """One of the lifecycle changes staff make to agents, and what to tell them first."""

    slug: str
    verb: str  # past tense, for the message afterwards
    label: str  # the confirm button
    danger: bool
    service: AgentService
    allowed_from: frozenset[str]


def _tokens_revoke(*, actor: Principal, organization_id: uuid.UUID, agent_id: uuid.UUID) -> int:
    return agent_tokens_revoke(actor=actor, organization_id=organization_id, agent_id=agent_id)


TRANSITIONS = {
    t.slug: t
    for t in (
        Transition("suspend", "Suspended", "Yes, suspend", True, services.agent_suspend,
                   frozenset({AgentStatus.ACTIVE})),
        Transition("reactivate", "Reactivated", "Reactivate", False, services.agent_reactivate,
                   frozenset({AgentStatus.SUSPENDED})),
        Transition("decommission", "Decommissioned", "Yes, decommission for good", True,
                   services.agent_decommission,
                   frozenset({AgentStatus.ACTIVE, AgentStatus.SUSPENDED})),
        Transition("revoke-tokens", "Revoked the tokens of", "Yes, revoke every token", True,
                   _tokens_revoke, frozenset({AgentStatus.ACTIVE, AgentStatus.SUSPENDED})),
    )
}  # fmt: skip


def transition_consequences(slug: str, agents: list[Agent]) -> list[str]:
    """What a lifecycle change does to these agents, in numbers."""
    if not agents:
        return []
    organization_id = agents[0].organization_id
    ids = [a.id for a in agents]
    tokens = plural(live_tokens_count(organization_id=organization_id, agent_ids=ids), "live token")
    secrets = plural(_active_secrets(ids, organization_id), "active secret")
    who = agents[0].name if len(agents) == 1 else plural(len(agents), "agent")
    if slug == "suspend":
        return [
            f"{who} can no longer get tokens or use the API.",
            f"Revokes {tokens} for good (reactivating does not bring them back).",
            f"Keeps its {secrets}: once reactivated it asks for new tokens with them.",
        ]
    if slug == "decommission":
        return [
            f"Decommissions {who} for good: a decommissioned agent is never reactivated.",
            f"Revokes {secrets} and {tokens}.",
            "Deactivates its DID: its documents answer 410 Gone.",
        ]
    if slug == "revoke-tokens":
        return [
            f"Revokes {tokens} of {who} for good.",
            f"Its {secrets} keep working: it asks for new tokens with them.",
        ]
    return [f"{who} may get tokens and use the API again (with new tokens)."]


def lifecycle_action(
    slug: str, description: str
) -> Callable[[admin.ModelAdmin[Agent], HttpRequest, QuerySet[Agent]], HttpResponse | None]:
    """A changelist action applying one lifecycle change to the selected agents, after a
    confirmation page that says what it does in numbers."""
    transition = TRANSITIONS[slug]

    def apply(
        modeladmin: admin.ModelAdmin[Agent], request: HttpRequest, queryset: QuerySet[Agent]
    ) -> HttpResponse | None:
        agents = list(queryset)
        if transition.danger and not confirmed(request):
            by_organization: dict[uuid.UUID, list[Agent]] = {}
            for agent in agents:
                by_organization.setdefault(agent.organization_id, []).append(agent)
            consequences = [
                line for group in by_organization.values()
                for line in transition_consequences(slug, group)
            ]  # fmt: skip
            return confirmation_page(
                request, title=f"{description}?", question=f"{description}:",
                subjects=[a.name for a in agents], consequences=consequences,
                confirm_label=transition.label, back_url=request.get_full_path(),
                back_label="Agents", hidden=action_hidden_fields(request),
            )  # fmt: skip
        run_service_action(
            modeladmin, request, agents,
            lambda actor, agent: transition.service(
                actor=actor, organization_id=agent.organization_id, agent_id=agent.id
            ),
            transition.verb,
        )  # fmt: skip
        return None

    apply.__name__ = slug.replace("-", "_")  # the action's name in the admin's POST
    return admin.action(permissions=["write"], description=description)(apply)


class SecretIssueForm(forms.Form):
    expires_at = forms.DateTimeField(
        required=False,
        help_text="When the secret stops working (UTC, YYYY-MM-DD HH:MM). Empty: it does not "
        "expire; rotate it instead.",
    )

    def clean_expires_at(self) -> datetime | None:
        value: datetime | None = self.cleaned_data.get("expires_at")
        if value is not None and value <= timezone.now():
            raise forms.ValidationError("Must be in the future.")
        return value


class ScopesForm(forms.Form):
    scopes = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        choices=[(str(s), f"{s.value}: {s.label}") for s in sorted(AGENT_SCOPES, key=str)],
        required=False,
        help_text="What the agent may ask for at the token endpoint (scopes outside this list "
        "are refused with invalid_scope).",
    )


class DelegationForm(forms.Form):
    """Who may act for an agent through token exchange (RFC 8693), as ``PUT
    /agents/{id}/delegation`` takes it."""

    any_agent = forms.BooleanField(
        required=False, label="Any agent of the organization may act for it",
        help_text="Otherwise only the agents chosen below.",
    )  # fmt: skip
    actors = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple, required=False, label="Agents that may act for it"
    )
    trusted_actors = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False, max_length=4000,
        label="Agents of other organizations",
        help_text="Their agent ids, one per line: agents of organizations this one trusts to act"
        " for its agents (a federation partner for this deployment that allows delegation).",
    )  # fmt: skip
    scopes = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple, required=False,
        choices=[(str(s), f"{s.value}: {s.label}") for s in sorted(AGENT_SCOPES, key=str)],
        label="Scopes they may be handed",
        help_text="None chosen: any scope of the token they exchange.",
    )  # fmt: skip
    max_depth = forms.IntegerField(
        required=False, min_value=1, max_value=10, label="Longest chain",
        help_text="How many agents may act in a chain (empty: the organization's default).",
    )  # fmt: skip

    def __init__(self, *args: object, others: list[tuple[str, str]], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        field = self.fields["actors"]
        assert isinstance(field, forms.MultipleChoiceField)  # noqa: S101 - declared above
        field.choices = others

    def clean_trusted_actors(self) -> list[uuid.UUID]:
        lines = str(self.cleaned_data.get("trusted_actors") or "").split()
        try:
            return [uuid.UUID(line) for line in lines]
        except ValueError as exc:
            raise forms.ValidationError("Agent ids (UUIDs), one per line.") from exc


RECENT_EVENTS = 10


def _people(organization_id: uuid.UUID | None) -> list[tuple[str, str]]:
    """The organization's active people, as sponsor choices."""
    if organization_id is None:
        return []
    memberships = StaffMembership.objects.filter(
        organization_id=organization_id, user__is_active=True
    ).select_related("user")
    return [
        (m.user.get_username(), f"{m.user.get_username()} ({m.get_role_display().lower()})")
        for m in memberships.order_by("user__username")
    ]


def _lapses_at() -> ExpressionWrapper[CombinedExpression]:
    """When an agent's attestation lapses, in SQL: its attestation plus its organization's
    period."""
    return ExpressionWrapper(
        F("attested_at") + F("organization__attestation_period_days") * timedelta(days=1),
        output_field=DateTimeField(),
    )


class AttestationFilter(admin.SimpleListFilter):
    """Which agents are due: staff find them here and attest in bulk."""

    title = "attestation"
    parameter_name = "attestation"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Agent]
    ) -> list[tuple[str, str]]:
        return [("due", "due within 7 days"), ("lapsed", "lapsed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Agent]) -> QuerySet[Agent]:
        now = timezone.now()
        agents = queryset.exclude(status=AgentStatus.DECOMMISSIONED).annotate(
            lapses_at=_lapses_at()
        )
        if self.value() == "due":
            return agents.filter(
                lapses_at__gt=now, lapses_at__lte=now + services.ATTESTATION_WARNING
            )
        if self.value() == "lapsed":
            return agents.filter(Q(lapses_at__lte=now) | Q(attested_at__isnull=True))
        return queryset


@admin.action(permissions=["write"], description="Attest selected agents (still needed)")
def attest_action(
    modeladmin: admin.ModelAdmin[Agent], request: HttpRequest, queryset: QuerySet[Agent]
) -> None:
    """The sponsor (or staff for them) attests in bulk: one attestation each, per
    organization."""
    principal = admin_principal(request)
    by_organization: dict[uuid.UUID, list[uuid.UUID]] = {}
    for agent in queryset.exclude(status=AgentStatus.DECOMMISSIONED):
        by_organization.setdefault(agent.organization_id, []).append(agent.id)
    attested = 0
    try:
        for organization_id, ids in by_organization.items():
            attested += services.agents_attest(
                actor=principal, organization_id=organization_id, agent_ids=ids
            )
    except DomainError as exc:
        modeladmin.message_user(request, exc.detail, messages.ERROR)
        return
    modeladmin.message_user(
        request, f"Attested {plural(attested, 'agent')}: each runs one more period.",
        messages.SUCCESS,
    )  # fmt: skip


class KillSwitchForm(forms.Form):
    reason = forms.CharField(
        max_length=500, required=False, help_text="Recorded in the audit log with each agent."
    )


@admin.register(Agent)
class AgentAdmin(ServiceSaves[Agent], ManagedByScope[Agent], admin.ModelAdmin[Agent]):
    """An agent with everything staff look for: its organization, the scopes it may request,
    its secrets (metadata only) and what happened to it lately. Read with ``agents:read``,
    registered, changed and suspended with ``agents:write``."""

    admin_scope, write_scope = Scope.AGENTS_READ, Scope.AGENTS_WRITE

    form = AgentAdminForm
    list_display = [
        "name", "status", "capability_list", "sponsor_name", "attestation", "organization",
        "created_at",
    ]  # fmt: skip
    list_filter = ["organization", "status", AttestationFilter, "created_at"]
    search_fields = ["name", "description", "id"]
    readonly_fields = [
        "organization_name",
        "id",
        "status",
        "allowed_scopes",
        "attestation",
        "credentials",
        "recent_events",
        "created_at",
        "updated_at",
    ]
    actions = [
        attest_action,
        lifecycle_action("suspend", "Suspend selected agents"),
        lifecycle_action("reactivate", "Reactivate selected agents"),
        lifecycle_action("decommission", "Decommission selected agents (permanent)"),
        lifecycle_action("revoke-tokens", "Revoke every token of selected agents"),
    ]
    list_select_related = ["organization", "sponsor"]
    change_form_template = "admin/agents/agent/change_form.html"
    change_list_template = "admin/agents/agent/change_list.html"

    # --- the agent's own pages: a secret, its scopes, its lifecycle --------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        own = [
            path("<uuid:agent_id>/secret/", wrap(self.secret_view), name="agents_agent_secret"),
            path("<uuid:agent_id>/scopes/", wrap(self.scopes_view), name="agents_agent_scopes"),
            path(
                "<uuid:agent_id>/delegation/",
                wrap(self.delegation_view),
                name="agents_agent_delegation",
            ),  # fmt: skip
            path("kill-switch/", wrap(self.kill_switch_view), name="agents_agent_kill_switch"),
        ]
        own += [
            path(
                f"<uuid:agent_id>/{slug}/",
                wrap(self.transition_view),
                {"slug": slug},
                name=f"agents_agent_{slug.replace('-', '_')}",
            )  # fmt: skip
            for slug in TRANSITIONS
        ]
        return [*own, *super().get_urls()]

    def _agent(self, request: HttpRequest, agent_id: uuid.UUID) -> Agent:
        agent = self.get_queryset(request).filter(id=agent_id).first()
        if agent is None:
            raise Http404("No such agent.")
        return agent

    def _page(self, agent: Agent) -> str:
        return reverse("admin:agents_agent_change", args=[agent.id])

    def _credentials_writer(self, request: HttpRequest) -> bool:
        return self._holds(request, Scope.CREDENTIALS_WRITE)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, object] | None = None,
    ) -> HttpResponse:
        context = {
            **(extra_context or {}),
            "agent_writer": self.has_write_permission(request),
            "credentials_writer": self._credentials_writer(request),
            "transitions": TRANSITIONS,
        }
        return super().change_view(request, object_id, form_url, context)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, object] | None = None
    ) -> HttpResponse:
        """The list, with the kill switch for the organization it shows (platform staff: once
        they have filtered it to one organization)."""
        principal = admin_principal(request)
        organization = (
            request.GET.get("organization__id__exact") if principal.is_platform
            else str(principal.organization_id or "")
        )  # fmt: skip
        kill_switch = ""
        if organization and self.has_write_permission(request):
            kill_switch = f"{reverse('admin:agents_agent_kill_switch')}?organization={organization}"
        context = {**(extra_context or {}), "kill_switch_url": kill_switch}
        return super().changelist_view(request, context)

    def response_add(
        self, request: HttpRequest, obj: Agent, post_url_continue: str | None = None
    ) -> HttpResponse:
        """After registering an agent: its page, where its first secret is issued."""
        if "_addanother" in request.POST or "_popup" in request.POST:
            return super().response_add(request, obj, post_url_continue)
        self.message_user(
            request, f"Registered {obj.name}. Issue its first client secret next.", messages.SUCCESS
        )
        return HttpResponseRedirect(self._page(obj))

    def secret_view(self, request: HttpRequest, agent_id: uuid.UUID) -> HttpResponse:
        agent = self._agent(request, agent_id)
        if not self._credentials_writer(request):
            raise Http404("No such page.")
        form = SecretIssueForm(request.POST if confirmed(request) else None)
        if confirmed(request) and form.is_valid():
            try:
                issued = credential_services.credential_generate(
                    actor=admin_principal(request), organization_id=agent.organization_id,
                    agent_id=agent.id, expires_at=form.cleaned_data.get("expires_at"),
                )  # fmt: skip
            except DomainError as exc:
                self.message_user(request, exc.detail, messages.ERROR)
                return HttpResponseRedirect(self._page(agent))
            return shown_once_page(
                request, title=f"A client secret for {agent.name}",
                note="Copy the secret now: only a keyed hash of it is kept, so it cannot be "
                "shown again. The agent authenticates at the token endpoint with both.",
                rows=[("client_id", issued.client_id), ("client_secret", issued.secret)],
                back_url=self._page(agent), back_label=f"Back to {agent.name}",
            )  # fmt: skip
        active = _active_secrets([agent.id], agent.organization_id)
        return confirmation_page(
            request, title=f"Issue a client secret for {agent.name}",
            question=f"A new client secret for {agent.name}.",
            consequences=[
                "Shows the secret once, with the agent's client_id beside it.",
                f"The agent's {plural(active, 'active secret')} keep working; rotate or revoke "
                "them separately.",
            ],
            confirm_label="Issue the secret", back_url=self._page(agent), back_label=agent.name,
            form=form, danger=False,
        )  # fmt: skip

    def scopes_view(self, request: HttpRequest, agent_id: uuid.UUID) -> HttpResponse:
        agent = self._agent(request, agent_id)
        if not self._credentials_writer(request):
            raise Http404("No such page.")
        current = credential_services.client_scopes_get(
            organization_id=agent.organization_id, agent_id=agent.id
        )
        form = ScopesForm(
            request.POST if request.method == "POST" else None, initial={"scopes": current}
        )
        if request.method == "POST" and form.is_valid():
            try:
                credential_services.client_scopes_set(
                    actor=admin_principal(request), organization_id=agent.organization_id,
                    agent_id=agent.id, scopes=list(form.cleaned_data["scopes"]),
                )  # fmt: skip
            except DomainError as exc:
                form.add_error("scopes", exc.detail)
            else:
                self.message_user(
                    request, f"Saved the scopes {agent.name} may ask for.", messages.SUCCESS
                )
                return HttpResponseRedirect(self._page(agent))
        return TemplateResponse(
            request, "admin/agents/agent/scopes.html",
            {**self.admin_site.each_context(request), "title": f"Scopes {agent.name} may ask for",
             "agent": agent, "form": form, "back_url": self._page(agent), "opts": self.model._meta},
        )  # fmt: skip

    def delegation_view(self, request: HttpRequest, agent_id: uuid.UUID) -> HttpResponse:
        agent = self._agent(request, agent_id)
        if not self._holds(request, Scope.AGENTS_WRITE):
            raise Http404("No such page.")
        others = [
            (str(i), name)
            for i, name in Agent.objects.filter(organization_id=agent.organization_id)
            .exclude(id=agent.id)
            .order_by("name")
            .values_list("id", "name")
        ]
        policy = services.delegation_policy(agent)
        listed = [] if policy["actors"] == ANY_ACTOR else cast(list[str], policy["actors"])
        own = {i for i, _ in others}
        initial = {
            "any_agent": policy["actors"] == ANY_ACTOR,
            "actors": [a for a in listed if a in own],
            "trusted_actors": "\n".join(a for a in listed if a not in own),
            "scopes": policy["scopes"], "max_depth": policy["max_depth"],
        }  # fmt: skip
        form = DelegationForm(
            request.POST if request.method == "POST" else None, initial=initial, others=others
        )
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                services.agent_delegation_set(
                    actor=admin_principal(request), organization_id=agent.organization_id,
                    agent_id=agent.id,
                    actors=ANY_ACTOR if data["any_agent"] else [
                        *(uuid.UUID(a) for a in data["actors"]), *data["trusted_actors"]
                    ],
                    scopes=list(data["scopes"]), max_depth=data["max_depth"],
                )  # fmt: skip
            except DomainError as exc:
                form.add_error(None, exc.detail)
            else:
                self.message_user(request, f"Saved who may act for {agent.name}.", messages.SUCCESS)
                return HttpResponseRedirect(self._page(agent))
        return TemplateResponse(
            request, "admin/agents/agent/delegation.html",
            {**self.admin_site.each_context(request), "title": f"Who may act for {agent.name}",
             "agent": agent, "form": form, "back_url": self._page(agent), "opts": self.model._meta},
        )  # fmt: skip

    def transition_view(self, request: HttpRequest, agent_id: uuid.UUID, slug: str) -> HttpResponse:
        agent = self._agent(request, agent_id)
        transition = TRANSITIONS[slug]
        if not self.has_write_permission(request) or agent.status not in transition.allowed_from:
            raise Http404("No such page.")
        if confirmed(request):
            try:
                result = transition.service(
                    actor=admin_principal(request), organization_id=agent.organization_id,
                    agent_id=agent.id,
                )  # fmt: skip
            except DomainError as exc:
                self.message_user(request, exc.detail, messages.ERROR)
            else:
                done = f" ({plural(result, 'token')})" if isinstance(result, int) else ""
                self.message_user(
                    request, f"{transition.verb} {agent.name}{done}.", messages.SUCCESS
                )
            return HttpResponseRedirect(self._page(agent))
        titles = {
            "suspend": f"Suspend {agent.name}?", "reactivate": f"Reactivate {agent.name}?",
            "decommission": f"Decommission {agent.name}?",
            "revoke-tokens": f"Revoke every token of {agent.name}?",
        }  # fmt: skip
        return confirmation_page(
            request, title=titles[slug], question=titles[slug],
            consequences=transition_consequences(slug, [agent]),
            confirm_label=transition.label, back_url=self._page(agent), back_label=agent.name,
            danger=transition.danger,
        )  # fmt: skip

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        return scoped_to_principal(request, super().get_queryset(request))

    def get_form(
        self, request: HttpRequest, obj: Agent | None = None, change: bool = False,
        **kwargs: object,
    ) -> type[forms.ModelForm[Agent]]:  # fmt: skip
        form = super().get_form(request, obj, change, **kwargs)
        organization_choice(form, request, adding=obj is None)
        organization_id = obj.organization_id if obj else admin_principal(request).organization_id
        # a field of this class's own (the declared one is shared by every form class)
        form.base_fields["sponsor_username"] = forms.ChoiceField(
            label="Sponsor", required=False,
            choices=[("", "unchanged" if obj else "the person registering it (or the"
                      " longest-standing owner)")]
            + _people(organization_id),
            help_text="The person of the organization who answers for the agent: leaving the"
            " organization suspends it unless it is reassigned first.",
        )  # fmt: skip
        return form

    def get_fields(self, request: HttpRequest, obj: Agent | None = None) -> tuple[str, ...]:
        fields: tuple[str, ...] = (
            "name", "description", "capabilities", "metadata", "version", "skills", "authors",
            "sponsor_username",
        )  # fmt: skip
        if obj is None and admin_principal(request).is_platform:
            fields = ("for_organization", *fields)
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
            '<tr><td><a href="{}"><code>{}…</code></a></td><td>{}</td><td>{}</td><td>{}</td>'
            "<td>{}</td></tr>",
            (
                (
                    reverse("admin:credentials_clientsecret_change", args=[secret.id]),
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

    @admin.display(description="sponsor", ordering="sponsor__username")
    def sponsor_name(self, obj: Agent) -> str:
        return obj.sponsor_username or "none"

    @admin.display(description="attestation")
    def attestation(self, obj: Agent) -> str:
        if obj.status == AgentStatus.DECOMMISSIONED:
            return "—"
        lapses = services.attestation_due_at(obj, obj.organization.attestation_period_days)
        if lapses is None:
            return "never attested"
        now = timezone.now()
        if lapses <= now:
            return f"lapsed {lapses:%Y-%m-%d}"
        if lapses - now <= services.ATTESTATION_WARNING:
            return f"due {lapses:%Y-%m-%d}"
        return f"until {lapses:%Y-%m-%d}"

    def kill_switch_view(self, request: HttpRequest) -> HttpResponse:
        """Suspend every active agent of the organization, or of one sponsor, at once, after a
        page naming how many agents and live tokens that stops."""
        principal = admin_principal(request)
        if not self.has_write_permission(request):
            raise Http404("No such page.")
        query = request.POST if request.method == "POST" else request.GET
        organization_id = principal.organization_id
        if principal.is_platform or query.get("organization"):
            try:
                organization_id = uuid.UUID(str(query.get("organization", "")))
            except ValueError as exc:
                raise Http404("Choose an organization.") from exc
            if not principal.is_platform and organization_id != principal.organization_id:
                raise Http404("No such organization.")
        organization = (
            Organization.objects.filter(id=organization_id).first() if organization_id else None
        )
        if organization is None:
            raise Http404("No such organization.")
        sponsor = str(query.get("sponsor", "")).strip() or None
        back = reverse("admin:agents_agent_changelist")
        try:
            scope = services.kill_switch_scope(
                organization_id=organization.id, sponsor=sponsor,
                live_tokens=lambda ids: live_tokens_count(
                    organization_id=organization.id, agent_ids=ids
                ),
            )  # fmt: skip
        except DomainError as exc:
            self.message_user(request, exc.detail, messages.ERROR)
            return HttpResponseRedirect(back)
        form = KillSwitchForm(request.POST if confirmed(request) else None)
        if confirmed(request) and form.is_valid():
            try:
                count = services.kill_switch(
                    actor=principal, organization_id=organization.id, sponsor=sponsor,
                    reason=form.cleaned_data["reason"],
                )  # fmt: skip
            except DomainError as exc:
                self.message_user(request, exc.detail, messages.ERROR)
                return HttpResponseRedirect(back)
            self.message_user(request, f"Suspended {plural(count, 'agent')}.", messages.SUCCESS)
            return HttpResponseRedirect(back)
        whose = f"sponsored by {sponsor}" if sponsor else f"of {organization.name}"
        agents = plural(len(scope.agent_ids), "active agent", zero="no")
        names = scope.names[:50]
        return confirmation_page(
            request, title="Kill switch", question=f"Suspend every active agent {whose}?",
            subjects=names + ([f"and {len(scope.agent_ids) - 50} more"]
                              if len(scope.agent_ids) > 50 else []),
            consequences=[
                f"Suspends {agents} at once: they can no longer get tokens or use the API.",
                f"Revokes {plural(scope.live_tokens, 'live token', zero='no')} they hold for good,"
                " and every token exchanged from them (offline verifiers see it in the token"
                " status list within a second).",
                "Keeps their secrets: each one reactivated by itself gets new tokens.",
            ],
            confirm_label=f"Yes, suspend {agents}", back_url=back, back_label="Agents",
            hidden=[("organization", str(organization.id)), ("sponsor", sponsor or "")],
            form=form,
        )  # fmt: skip

    def has_delete_permission(self, request: HttpRequest, obj: Agent | None = None) -> bool:
        return False  # agents are decommissioned, never deleted

    def service_save(
        self, request: HttpRequest, form: forms.ModelForm[Agent], change: bool
    ) -> Agent:
        principal = admin_principal(request)
        data = form.cleaned_data
        if change:
            changes = {
                name: data[name] for name in form.changed_data
                if name in data and name != "sponsor_username"
            }  # fmt: skip
            agent = services.agent_update(
                actor=principal, organization_id=form.instance.organization_id,
                agent_id=form.instance.id, changes=changes,
            )  # fmt: skip
            if "sponsor_username" in form.changed_data and data["sponsor_username"]:
                agent = services.agent_sponsor_set(
                    actor=principal, organization_id=agent.organization_id, agent_id=agent.id,
                    username=data["sponsor_username"],
                )  # fmt: skip
            return agent
        organization = data.get("for_organization")
        organization_id = organization.id if organization else principal.organization_id
        if organization_id is None:  # a staff login of no organization
            raise ValidationFailed("Choose an organization.")
        return services.agent_register(
            actor=principal, organization_id=organization_id, name=data["name"],
            description=data.get("description") or "",
            capabilities=data.get("capabilities") or [], metadata=data.get("metadata") or {},
            version=data.get("version") or "1.0.0", skills=data.get("skills") or [],
            authors=list(data.get("authors") or []),
            sponsor=data.get("sponsor_username") or None,
        )  # fmt: skip


@admin.register(OrganizationMember)
class OrganizationMemberAdmin(
    ServiceSaves[OrganizationMember],
    ManagedByScope[OrganizationMember],
    admin.ModelAdmin[OrganizationMember],
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

    def service_save(
        self, request: HttpRequest, form: forms.ModelForm[OrganizationMember], change: bool
    ) -> OrganizationMember:
        member = form.instance
        return services.member_add(
            actor=admin_principal(request), organization_id=member.organization_id,
            agent_id=member.agent_id, role=form.cleaned_data["role"],
        )  # fmt: skip
