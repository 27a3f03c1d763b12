"""Admin for signing keys (platform staff: their lifecycle and "rotate now") and for issued
access tokens (DOT's ``ACCESS_TOKEN_ADMIN_CLASS``): metadata only.

DOT's own admin revokes by deleting the row; our tokens are self-contained JWTs, so revoking
must list the ``jti`` in the revocation list, which only the service does.
"""

import copy
import uuid

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from agentidp.admin import (
    ORGANIZATION_CHOICE,
    ConfirmedDelete,
    ManagedByScope,
    PlatformOnly,
    ServiceSaves,
    action_hidden_fields,
    admin_principal,
    confirmation_page,
    confirmed,
    organization_choice,
    run_service_action,
    scoped_to_principal,
)
from agentidp.errors import DomainError, JSONValue, ValidationFailed
from agentidp.secrets import SecretStoreError
from agentidp.words import plural
from agents.models import MAX_DELEGATION_DEPTH, Agent
from oidc import resources
from oidc.models import AccessToken, Resource, ResourceGrant, SigningKey
from oidc.services import access_token_revoke, signing_key_rotate
from organizations.choices import Scope
from organizations.models import Organization


@admin.register(SigningKey)
class SigningKeyAdmin(PlatformOnly[SigningKey], admin.ModelAdmin[SigningKey]):
    """Each key's status and dates; private parts live only in the secret store. "Rotate now"
    goes through the rotation service, pre-publication rule included."""

    list_display = [
        "kid", "algorithm", "status", "created_at", "activated_at", "retired_at", "verify_until"
    ]  # fmt: skip
    list_filter = ["algorithm", "status"]
    search_fields = ["kid"]
    readonly_fields = [
        "kid", "algorithm", "status", "created_at", "activated_at", "retired_at", "verify_until",
        "public_jwk",
    ]  # fmt: skip
    actions = ["rotate_now"]

    @admin.action(description="Rotate now (the selected keys' algorithms)")
    def rotate_now(self, request: HttpRequest, queryset: QuerySet[SigningKey]) -> None:
        algorithms = sorted(set(queryset.values_list("algorithm", flat=True)))
        try:
            rotation = signing_key_rotate(actor=admin_principal(request), algorithms=algorithms)
        except DomainError as exc:
            self.message_user(request, exc.detail, messages.ERROR)
            return
        except SecretStoreError as exc:
            self.message_user(
                request,
                f"The secret store is unavailable ({type(exc).__name__}); nothing was rotated.",
                messages.ERROR,
            )
            return
        signing = ", ".join(f"{name}: {key.kid}" for name, key in rotation.activated.items())
        self.message_user(request, f"Rotated. Now signing: {signing}.", messages.SUCCESS)


class AccessTokenAdmin(ManagedByScope[AccessToken], admin.ModelAdmin[AccessToken]):
    """Issued tokens: listed with ``agents:read``, revoked with ``credentials:write``."""

    admin_scope, write_scope = Scope.AGENTS_READ, Scope.CREDENTIALS_WRITE
    list_display = ["jti", "application", "scope", "expires", "organization"]
    list_filter = ["expires"]
    search_fields = ["jti", "application__client_id"]
    fields = ["jti", "application", "scope", "expires", "resource", "delegation_chain"]
    readonly_fields = ["jti", "application", "scope", "expires", "resource", "delegation_chain"]
    list_select_related = ["application", "organization"]
    actions = ["revoke"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AccessToken]:
        return scoped_to_principal(request, super().get_queryset(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AccessToken | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AccessToken | None = None) -> bool:
        return False

    @admin.display(description="delegation chain")
    def delegation_chain(self, obj: AccessToken) -> str:
        """The tokens this one was exchanged from, the subject's first, each with its agent."""
        if obj.parent_jti is None:
            return "None: issued to its agent directly."
        chain: list[AccessToken | uuid.UUID] = [obj]
        current = obj
        while current.parent_jti is not None and len(chain) <= MAX_DELEGATION_DEPTH:
            parent = (
                AccessToken.objects.filter(
                    organization_id=obj.organization_id, jti=current.parent_jti
                )
                .select_related("application__agent")
                .first()
            )
            if parent is None:
                # purged after it expired, or another organization's (a trusted one's agent
                # was handed a token for this one's: delegation across organizations)
                chain.append(current.parent_jti)
                break
            chain.append(parent)
            current = parent
        steps = []
        for position, link in enumerate(reversed(chain)):
            if isinstance(link, uuid.UUID):
                steps.append(
                    format_html(
                        "<li>a token not kept here: another organization's, or expired"
                        " (<code>{}</code>)</li>",
                        link,
                    )
                )
                continue
            agent = link.application.agent.name if link.application else "?"
            role = "the subject" if position == 0 else "acting for it"
            if link.pk == obj.pk:
                steps.append(format_html("<li>{} ({}): this token</li>", agent, role))
            else:
                url = reverse("admin:oidc_accesstoken_change", args=[link.pk])
                steps.append(format_html(
                    '<li>{} ({}): <a href="{}"><code>{}</code></a></li>', agent, role, url, link.jti
                ))  # fmt: skip
        return format_html("<ol>{}</ol>", mark_safe("".join(steps)))  # noqa: S308 - each escaped

    @admin.action(permissions=["write"], description="Revoke selected access tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[AccessToken]) -> HttpResponse | None:
        tokens = list(queryset.select_related("application__agent"))
        if not confirmed(request):
            now = timezone.now()
            live = sum(1 for t in tokens if t.expires > now)
            agents = {
                t.application.agent.name for t in tokens if t.application and t.application.agent
            }
            return confirmation_page(
                request, title="Revoke the selected access tokens?",
                question="Revoke these access tokens now?",
                subjects=[str(t.jti) for t in tokens],
                consequences=[
                    f"Revokes {plural(len(tokens), 'token')} of {plural(len(agents), 'agent')}, "
                    f"{live} of them still live: the API and introspection refuse them from now on.",
                    "A service that checks only a token's signature offline accepts it until it "
                    "expires; the agents' secrets keep working.",
                ],
                confirm_label="Yes, revoke", back_url=request.get_full_path(),
                back_label="Access tokens", hidden=action_hidden_fields(request),
            )  # fmt: skip
        run_service_action(
            self,
            request,
            queryset.select_related("application"),
            lambda actor, token: access_token_revoke(
                actor=actor,
                client=token.application,
                jti=str(token.jti),
                expires_at=int(token.expires.timestamp()),
            ),
            "Revoked",
        )
        return None


# --- the resource registry ---------------------------------------------------------------------


def scopes_text(scopes: object) -> str:
    """A resource's scopes as the admin edits them: one per line, the name then its
    description."""
    items = scopes if isinstance(scopes, list) else []
    return "\n".join(
        f"{s.get('name', '')} {s.get('description', '')}".rstrip()
        for s in items
        if isinstance(s, dict)
    )


def scopes_parsed(text: str) -> list[dict[str, JSONValue]]:
    parsed: list[dict[str, JSONValue]] = []
    for line in text.splitlines():
        if line.strip():
            name, _, description = line.strip().partition(" ")
            parsed.append({"name": name, "description": description.strip()})
    return parsed


class ResourceForm(forms.ModelForm[Resource]):
    """Registration or a change, saved through the registry's services (every rule and the
    audit event there); the scopes as lines of ``name description``."""

    scopes_lines = forms.CharField(
        label="Scopes", required=False, widget=forms.Textarea(attrs={"rows": 6}),
        help_text="One per line: the scope's name (such as tools:call), a space, what it lets "
        "an agent do.",
    )  # fmt: skip
    for_organization = forms.ModelChoiceField(
        queryset=Organization.objects.none(), required=False, label="Organization"
    )

    class Meta:
        model = Resource
        fields = ["identifier", "name", "access_token_lifetime", "signing_algorithm",
                  "dpop_required", "metadata_hosted"]  # fmt: skip

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if self.instance.pk and "scopes_lines" in self.fields:
            self.fields["scopes_lines"].initial = scopes_text(self.instance.scopes)


class GrantForm(forms.ModelForm[ResourceGrant]):
    """Which of a resource's scopes one agent, or every agent of a role, may be issued."""

    scopes_text = forms.CharField(
        label="Scopes", required=False,
        help_text="The resource's scope names, separated by spaces (empty: remove the grant).",
    )  # fmt: skip

    class Meta:
        model = ResourceGrant
        fields = ["resource", "agent", "role"]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if self.instance.pk:
            self.fields["scopes_text"].initial = " ".join(map(str, self.instance.scopes))


@admin.register(Resource)
class ResourceAdmin(
    ServiceSaves[Resource],
    ConfirmedDelete[Resource],
    ManagedByScope[Resource],
    admin.ModelAdmin[Resource],
):
    """The organization's APIs and MCP servers: the identifier tokens name as ``aud``, the
    scopes they define, how their tokens are made; read with ``resources:read`` (auditors
    too), changed with ``resources:manage``."""

    admin_scope, write_scope = Scope.RESOURCES_READ, Scope.RESOURCES_MANAGE
    form = ResourceForm
    list_display = ["identifier", "name", "organization", "scope_list", "signing_algorithm",
                    "dpop_required"]  # fmt: skip
    list_filter = ["organization", "dpop_required", "signing_algorithm"]
    search_fields = ["identifier", "name"]
    readonly_fields = ["created_by", "created_at", "updated_at"]
    list_select_related = ["organization"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Resource]:
        return scoped_to_principal(request, super().get_queryset(request))

    @admin.display(description="scopes")
    def scope_list(self, resource: Resource) -> str:
        return " ".join(resource.scope_names)

    def get_fields(self, request: HttpRequest, obj: Resource | None = None) -> tuple[str, ...]:
        fields = ("identifier", "name", "scopes_lines", "access_token_lifetime",
                  "signing_algorithm", "dpop_required", "metadata_hosted")  # fmt: skip
        if obj is None:
            platform = admin_principal(request).is_platform
            return ((ORGANIZATION_CHOICE,) if platform else ()) + fields
        return (*fields, "created_by", "created_at", "updated_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Resource | None = None) -> list[str]:
        fixed = ["created_by", "created_at", "updated_at"]
        return fixed if obj is None else ["identifier", *fixed]

    def get_form(
        self, request: HttpRequest, obj: Resource | None = None, change: bool = False,
        **kwargs: object,
    ) -> type[forms.ModelForm[Resource]]:  # fmt: skip
        form = super().get_form(request, obj, change, **kwargs)
        organization_choice(form, request, adding=obj is None)
        return form

    def service_save(
        self, request: HttpRequest, form: forms.ModelForm[Resource], change: bool
    ) -> Resource:
        actor = admin_principal(request)
        data = form.cleaned_data
        scopes = scopes_parsed(str(data.get("scopes_lines") or ""))
        if change:
            resource = form.instance
            changes: dict[str, JSONValue] = {
                name: data.get(name)
                for name in ("name", "access_token_lifetime", "signing_algorithm",
                             "dpop_required", "metadata_hosted")
                if name in form.changed_data
            }  # fmt: skip
            if "scopes_lines" in form.changed_data:
                changes["scopes"] = list[JSONValue](scopes)
            if not changes:
                return resource
            return resources.resource_update(
                actor=actor, organization_id=resource.organization_id,
                resource_id=resource.id, changes=changes,
            )  # fmt: skip
        chosen = data.get(ORGANIZATION_CHOICE)
        organization_id = chosen.id if actor.is_platform and chosen else actor.organization_id
        if organization_id is None:
            raise ValidationFailed(
                "Choose an organization.", errors={ORGANIZATION_CHOICE: ["Required."]}
            )
        return resources.resource_create(
            actor=actor, organization_id=organization_id,
            identifier=str(data.get("identifier") or ""), name=str(data.get("name") or ""),
            scopes=scopes, access_token_lifetime=data.get("access_token_lifetime"),
            signing_algorithm=str(data.get("signing_algorithm") or "ES256"),
            dpop_required=bool(data.get("dpop_required")),
            metadata_hosted=bool(data.get("metadata_hosted")),
        )  # fmt: skip

    def delete_model(self, request: HttpRequest, obj: Resource) -> None:
        resources.resource_delete(
            actor=admin_principal(request), organization_id=obj.organization_id,
            resource_id=obj.id,
        )  # fmt: skip

    def delete_consequences(self, request: HttpRequest, obj: Resource) -> list[str]:
        grants = ResourceGrant.objects.filter(
            organization_id=obj.organization_id, resource_id=obj.id
        ).count()
        return [
            f"No new token names {obj.identifier}; its {plural(grants, 'grant')} go with it.",
            "Tokens already issued for it live out their lifetime (at most "
            f"{obj.access_token_lifetime or 'the organization'}'s).",
            "The audit log keeps its history (resource.created, resource.deleted).",
        ]


@admin.register(ResourceGrant)
class ResourceGrantAdmin(
    ServiceSaves[ResourceGrant],
    ConfirmedDelete[ResourceGrant],
    ManagedByScope[ResourceGrant],
    admin.ModelAdmin[ResourceGrant],
):
    """Which of a resource's scopes each agent, or every agent holding a role, may be issued
    (``PUT /resources/{id}/grants/{agent_id}`` and ``/roles/{role}`` in the API)."""

    admin_scope, write_scope = Scope.RESOURCES_READ, Scope.RESOURCES_MANAGE
    form = GrantForm
    list_display = ["resource", "holder", "scope_list", "updated_at"]
    list_filter = ["resource", "role"]
    list_select_related = ["resource", "agent"]
    fields = ["resource", "agent", "role", "scopes_text"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ResourceGrant]:
        return scoped_to_principal(request, super().get_queryset(request))

    @admin.display(description="agent or role")
    def holder(self, grant: ResourceGrant) -> str:
        return grant.agent.name if grant.agent else f"every {grant.role}"

    @admin.display(description="scopes")
    def scope_list(self, grant: ResourceGrant) -> str:
        return " ".join(map(str, grant.scopes))

    def get_readonly_fields(
        self, request: HttpRequest, obj: ResourceGrant | None = None
    ) -> list[str]:
        return [] if obj is None else ["resource", "agent", "role"]

    def get_form(
        self, request: HttpRequest, obj: ResourceGrant | None = None, change: bool = False,
        **kwargs: object,
    ) -> type[forms.ModelForm[ResourceGrant]]:  # fmt: skip
        form = super().get_form(request, obj, change, **kwargs)
        if obj is None:
            for name, model in (("resource", Resource), ("agent", Agent)):
                field = form.base_fields.get(name)
                if isinstance(field, forms.ModelChoiceField):
                    field = copy.deepcopy(field)
                    field.queryset = scoped_to_principal(request, model.objects.all())
                    form.base_fields[name] = field
        return form

    def service_save(
        self, request: HttpRequest, form: forms.ModelForm[ResourceGrant], change: bool
    ) -> ResourceGrant:
        actor = admin_principal(request)
        data = form.cleaned_data
        grant = form.instance
        resource = grant.resource if change else data.get("resource")
        if not isinstance(resource, Resource):
            raise ValidationFailed("Choose a resource.", errors={"resource": ["Required."]})
        agent = grant.agent if change else data.get("agent")
        role = grant.role if change else str(data.get("role") or "")
        saved = resources.grant_set(
            actor=actor, organization_id=resource.organization_id, resource_id=resource.id,
            agent_id=agent.id if agent is not None else None, role=role,
            scopes=str(data.get("scopes_text") or "").split(),
        )  # fmt: skip
        if saved is None:
            raise ValidationFailed(
                "Name at least one scope (delete the grant to remove it).",
                errors={"scopes_text": ["At least one of the resource's scopes."]},
            )
        return saved

    def delete_model(self, request: HttpRequest, obj: ResourceGrant) -> None:
        resources.grant_set(
            actor=admin_principal(request), organization_id=obj.organization_id,
            resource_id=obj.resource_id, agent_id=obj.agent_id, role=obj.role, scopes=[],
        )  # fmt: skip

    def delete_consequences(self, request: HttpRequest, obj: ResourceGrant) -> list[str]:
        return [
            f"{self.holder(obj)} is no longer issued {self.scope_list(obj) or 'anything'} for "
            f"{obj.resource.identifier}; tokens already issued live out their lifetime."
        ]
