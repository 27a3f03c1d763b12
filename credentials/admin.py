"""Admin for agents' clients and secrets: metadata only, with rotate and revoke actions."""

import copy
import json
import uuid

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from jwcrypto import jwk

from agentidp.admin import (
    ConfirmedDelete,
    ManagedByScope,
    ServiceSaves,
    action_hidden_fields,
    admin_principal,
    confirmation_page,
    confirmed,
    run_service_action,
    scoped_to_principal,
    shown_once_page,
)
from agentidp.errors import DomainError, JSONValue, ValidationFailed
from agentidp.principals import Principal
from agentidp.words import plural
from agents.models import Agent
from credentials import keys as agent_keys
from credentials import services
from credentials.models import AgentKey, Client, ClientSecret
from oidc.selectors import live_tokens_count
from organizations.choices import Scope
from organizations.models import Organization


def _hours(seconds: int) -> str:
    hours = seconds / 3600
    return f"{hours:g} hour{'' if hours == 1 else 's'}"


class RotateForm(forms.Form):
    """How long the replaced secret keeps working beside the new one."""

    grace = forms.ChoiceField(
        widget=forms.RadioSelect,
        choices=[
            ("none", "None: the old secret stops now"),
            ("default", "The organization's default"),
            ("custom", "Custom"),
        ],
        initial="default",
    )
    hours = forms.DecimalField(
        required=False, min_value=0, max_digits=6, decimal_places=2,
        max_value=services.MAX_GRACE_SECONDS / 3600,
        help_text=f"With Custom: hours, at most {services.MAX_GRACE_SECONDS // 3600} (30 days).",
    )  # fmt: skip

    def __init__(self, *args: object, default_seconds: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        grace = self.fields["grace"]
        assert isinstance(grace, forms.ChoiceField)  # noqa: S101 - declared above
        grace.choices = [
            ("none", "None: the old secret stops now"),
            ("default", f"The organization's default ({_hours(default_seconds)})"),
            ("custom", "Custom"),
        ]

    def grace_seconds(self) -> int | None:
        choice = self.cleaned_data["grace"]
        if choice == "none":
            return 0
        if choice == "custom":
            return int(self.cleaned_data["hours"] * 3600)
        return None

    def clean(self) -> dict[str, object]:
        cleaned = super().clean() or {}
        if cleaned.get("grace") == "custom" and cleaned.get("hours") is None:
            self.add_error("hours", "How many hours?")
        return cleaned


@admin.register(ClientSecret)
class ClientSecretAdmin(ManagedByScope[ClientSecret], admin.ModelAdmin[ClientSecret]):
    """Secrets are never shown (only their prefix); the digest is not even listed. Listed with
    ``agents:read``, rotated and revoked with ``credentials:write``."""

    admin_scope, write_scope = Scope.AGENTS_READ, Scope.CREDENTIALS_WRITE

    list_display = ["prefix", "client", "status", "created_at", "expires_at", "revoked_at"]
    list_filter = ["created_at", "revoked_at"]
    search_fields = ["prefix", "client__client_id", "client__agent__name"]
    fields = ["prefix", "client", "created_at", "expires_at", "rotated_at", "revoked_at"]
    readonly_fields = ["prefix", "client", "created_at", "expires_at", "rotated_at", "revoked_at"]
    actions = ["rotate", "revoke"]
    list_select_related = ["client"]
    change_form_template = "admin/credentials/clientsecret/change_form.html"

    @admin.display(description="status")
    def status(self, obj: ClientSecret) -> str:
        return obj.status_at(timezone.now())

    def get_queryset(self, request: HttpRequest) -> QuerySet[ClientSecret]:
        return scoped_to_principal(request, super().get_queryset(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # issued on the agent's page (or through the API): shown once

    def has_change_permission(self, request: HttpRequest, obj: ClientSecret | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ClientSecret | None = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<uuid:secret_id>/rotate/", wrap(self.rotate_view), name="credentials_clientsecret_rotate"),
            path("<uuid:secret_id>/revoke/", wrap(self.revoke_view), name="credentials_clientsecret_revoke"),
            *super().get_urls(),
        ]  # fmt: skip

    def _secret(self, request: HttpRequest, secret_id: uuid.UUID) -> ClientSecret:
        found = (
            self.get_queryset(request).select_related("client__agent").filter(id=secret_id).first()
        )
        if found is None or not self.has_write_permission(request):
            raise Http404("No such secret.")
        return found

    @staticmethod
    def _agent_page(secret: ClientSecret) -> str:
        return reverse("admin:agents_agent_change", args=[secret.client.agent_id])

    def rotate_view(self, request: HttpRequest, secret_id: uuid.UUID) -> HttpResponse:
        secret = self._secret(request, secret_id)
        default = Organization.objects.values_list("credential_grace_seconds", flat=True).get(
            id=secret.organization_id
        )
        form = RotateForm(request.POST if confirmed(request) else None, default_seconds=default)
        agent = secret.client.agent
        if confirmed(request) and form.is_valid():
            try:
                issued = services.credential_rotate(
                    actor=admin_principal(request), organization_id=secret.organization_id,
                    agent_id=agent.id, credential_id=secret.id, grace_seconds=form.grace_seconds(),
                )  # fmt: skip
            except DomainError as exc:
                self.message_user(request, exc.detail, messages.ERROR)
                return HttpResponseRedirect(self._agent_page(secret))
            secret.refresh_from_db()
            return shown_once_page(
                request, title=f"The new client secret of {agent.name}",
                note=f"Copy it now: it cannot be shown again. The old secret ({secret.prefix}…) "
                f"keeps working until {secret.expires_at:%Y-%m-%d %H:%M} UTC.",
                rows=[("client_id", issued.client_id), ("client_secret", issued.secret)],
                back_url=self._agent_page(secret), back_label=f"Back to {agent.name}",
            )  # fmt: skip
        tokens = live_tokens_count(
            organization_id=secret.organization_id, credential_ids=[secret.id]
        )
        return confirmation_page(
            request, title=f"Rotate the secret {secret.prefix}… of {agent.name}",
            question="A new secret replaces this one; for how long should the old one keep working?",
            consequences=[
                "Issues a new secret, shown once.",
                "The old secret stops at the end of the grace period; its "
                f"{plural(tokens, 'live token')} live out their lifetime.",
            ],
            confirm_label="Rotate", back_url=self._agent_page(secret), back_label=agent.name,
            form=form, danger=False,
        )  # fmt: skip

    def revoke_view(self, request: HttpRequest, secret_id: uuid.UUID) -> HttpResponse:
        secret = self._secret(request, secret_id)
        agent = secret.client.agent
        if confirmed(request):
            try:
                services.credential_revoke(
                    actor=admin_principal(request), organization_id=secret.organization_id,
                    agent_id=agent.id, credential_id=secret.id,
                )  # fmt: skip
            except DomainError as exc:
                self.message_user(request, exc.detail, messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Revoked the secret {secret.prefix}… of {agent.name}.",
                    messages.SUCCESS,
                )
            return HttpResponseRedirect(self._agent_page(secret))
        return confirmation_page(
            request, title=f"Revoke the secret {secret.prefix}… of {agent.name}?",
            question=f"Revoke the secret {secret.prefix}… of {agent.name}?",
            consequences=_revoke_consequences([secret]),
            confirm_label="Yes, revoke", back_url=self._agent_page(secret), back_label=agent.name,
        )  # fmt: skip

    @admin.action(
        permissions=["write"], description="Rotate selected secrets (new secrets shown once)"
    )
    def rotate(self, request: HttpRequest, queryset: QuerySet[ClientSecret]) -> HttpResponse | None:
        """Rotate with the organization's default grace period; the new secrets are rendered in
        this response only."""
        rotated: list[tuple[str, str]] = []

        def rotate_one(actor: Principal, secret: ClientSecret) -> None:
            issued = services.credential_rotate(
                actor=actor,
                organization_id=secret.organization_id,
                agent_id=secret.client.agent_id,
                credential_id=secret.id,
            )
            rotated.extend([("client_id", issued.client_id), ("client_secret", issued.secret)])

        run_service_action(self, request, queryset, rotate_one, "Rotated")
        if not rotated:
            return None
        return shown_once_page(
            request, title="New client secrets",
            note="Copy each secret now: only a keyed hash is stored, so it cannot be shown "
            "again. The replaced secrets keep working until their grace period ends.",
            rows=rotated, back_url=reverse("admin:credentials_clientsecret_changelist"),
            back_label="Back to client secrets",
        )  # fmt: skip

    @admin.action(permissions=["write"], description="Revoke selected secrets now")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ClientSecret]) -> HttpResponse | None:
        secrets = list(queryset.select_related("client__agent"))
        if not confirmed(request):
            return confirmation_page(
                request, title="Revoke the selected secrets?",
                question="Revoke these secrets now?",
                subjects=[f"{s.prefix}… of {s.client.agent.name}" for s in secrets],
                consequences=_revoke_consequences(secrets),
                confirm_label="Yes, revoke", back_url=request.get_full_path(),
                back_label="Client secrets", hidden=action_hidden_fields(request),
            )  # fmt: skip
        run_service_action(
            self, request, secrets,
            lambda actor, secret: services.credential_revoke(
                actor=actor, organization_id=secret.organization_id,
                agent_id=secret.client.agent_id, credential_id=secret.id,
            ),
            "Revoked",
        )  # fmt: skip
        return None


def _revoke_consequences(secrets: list[ClientSecret]) -> list[str]:
    if not secrets:
        return []
    organization_id = secrets[0].organization_id
    tokens = live_tokens_count(
        organization_id=organization_id, credential_ids=[s.id for s in secrets]
    )
    return [
        f"Revokes {plural(len(secrets), 'secret')} now: the token endpoint refuses them from "
        "this moment.",
        f"Revokes {plural(tokens, 'live token')} issued with them, for good.",
        "The agents' other secrets and their tokens are untouched.",
    ]


class ClientAdmin(ServiceSaves[Client], ManagedByScope[Client], admin.ModelAdmin[Client]):
    """Agents' OAuth clients (DOT's ``APPLICATION_ADMIN_CLASS``): created with the agent's first
    secret, never by hand; allowed scopes change through the service (``agents:write``)."""

    admin_scope, write_scope = Scope.AGENTS_READ, Scope.AGENTS_WRITE

    list_display = [
        "client_id", "agent", "allowed_scopes", "id_token_signed_response_alg", "organization"
    ]  # fmt: skip
    search_fields = ["client_id", "agent__name"]
    fields = [
        "client_id", "agent", "allowed_scopes",
        "id_token_signed_response_alg", "userinfo_signed_response_alg",
        "dpop_bound_access_tokens",
    ]  # fmt: skip
    readonly_fields = ["client_id", "agent"]
    list_select_related = ["agent", "organization"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Client]:
        return scoped_to_principal(request, super().get_queryset(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Client | None = None) -> bool:
        return False

    def service_save(
        self, request: HttpRequest, form: forms.ModelForm[Client], change: bool
    ) -> Client:
        client = form.instance
        actor = admin_principal(request)
        services.client_scopes_set(
            actor=actor, organization_id=client.organization_id, agent_id=client.agent_id,
            scopes=list(form.cleaned_data["allowed_scopes"]),
        )  # fmt: skip
        services.client_metadata_set(
            actor=actor, organization_id=client.organization_id, agent_id=client.agent_id,
            id_token_signed_response_alg=form.cleaned_data["id_token_signed_response_alg"],
            userinfo_signed_response_alg=form.cleaned_data["userinfo_signed_response_alg"],
            dpop_bound_access_tokens=form.cleaned_data["dpop_bound_access_tokens"],
        )  # fmt: skip
        return client


def public_key_read(text: str) -> dict[str, JSONValue]:
    """A pasted or uploaded public key: a JWK (JSON) or a PEM public key."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except ValueError as exc:
            raise ValidationFailed(
                "Not valid JSON.", errors={"public_key": ["A JWK as JSON, or a PEM key."]}
            ) from exc
        if not isinstance(value, dict):
            raise ValidationFailed("Not a JWK.", errors={"public_key": ["A JWK object."]})
        return value
    try:
        key = jwk.JWK.from_pem(stripped.encode())
    except (ValueError, TypeError, jwk.InvalidJWKValue) as exc:
        raise ValidationFailed(
            "Not a public key.", errors={"public_key": ["A JWK as JSON, or a PEM public key."]}
        ) from exc
    if key.has_private:
        raise ValidationFailed(
            "A private key.", errors={"public_key": ["Paste the public key only."]}
        )
    exported: dict[str, JSONValue] = dict(key.export_public(as_dict=True))
    return exported


class AgentKeyForm(forms.ModelForm[AgentKey]):
    """Paste a public key (JWK or PEM), upload its file, or give a JWKS URI."""

    public_key = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 6}),
        help_text="A public JWK (JSON) or a PEM public key: EC P-256, Ed25519 or RSA 2048+.",
    )  # fmt: skip
    public_key_file = forms.FileField(
        required=False, label="or upload it", help_text="A .pem or .jwk file (at most 8 KB)."
    )
    jwks_uri = forms.CharField(max_length=2048, required=False, label="or a JWKS URI")

    class Meta:
        model = AgentKey
        fields = ["agent"]


@admin.register(AgentKey)
class AgentKeyAdmin(
    ServiceSaves[AgentKey],
    ConfirmedDelete[AgentKey],
    ManagedByScope[AgentKey],
    admin.ModelAdmin[AgentKey],
):
    """Agents' public keys for private_key_jwt (no secret needed): registered and removed
    through the key services (checks, audit, revoking the tokens issued on a removed key)."""

    admin_scope, write_scope = Scope.AGENTS_READ, Scope.CREDENTIALS_WRITE
    form = AgentKeyForm
    list_display = ["kid", "agent", "algorithm", "jwks_uri", "created_at", "last_used_at"]
    list_select_related = ["agent"]
    search_fields = ["kid", "agent__name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AgentKey]:
        return scoped_to_principal(request, super().get_queryset(request))

    def has_change_permission(self, request: HttpRequest, obj: AgentKey | None = None) -> bool:
        return False if obj is not None else super().has_change_permission(request, obj)

    def get_fields(self, request: HttpRequest, obj: AgentKey | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("agent", "public_key", "public_key_file", "jwks_uri")
        return ("agent", "kid", "algorithm", "public_jwk", "jwks_uri", "created_by",
                "created_at", "last_used_at")  # fmt: skip

    def get_readonly_fields(
        self, request: HttpRequest, obj: AgentKey | None = None
    ) -> tuple[str, ...]:
        if obj is None:
            return ()
        return self.get_fields(request, obj)

    def get_form(
        self, request: HttpRequest, obj: AgentKey | None = None, change: bool = False,
        **kwargs: object,
    ) -> type[forms.ModelForm[AgentKey]]:  # fmt: skip
        form = super().get_form(request, obj, change, **kwargs)
        field = form.base_fields.get("agent")
        if isinstance(field, forms.ModelChoiceField):
            field = copy.deepcopy(field)
            field.queryset = scoped_to_principal(request, Agent.objects.all())
            form.base_fields["agent"] = field
        return form

    def service_save(
        self, request: HttpRequest, form: forms.ModelForm[AgentKey], change: bool
    ) -> AgentKey:
        data = form.cleaned_data
        agent = data.get("agent")
        if not isinstance(agent, Agent):
            raise ValidationFailed("Choose an agent.", errors={"agent": ["Required."]})
        upload = data.get("public_key_file")
        text = str(data.get("public_key") or "")
        if upload is not None:
            if upload.size > 8192:
                raise ValidationFailed("Too large.", errors={"public_key_file": ["At most 8 KB."]})
            text = upload.read().decode("utf-8", "replace")
        uri = str(data.get("jwks_uri") or "")
        if bool(text.strip()) == bool(uri):
            raise ValidationFailed(
                "Give a public key or a JWKS URI.",
                errors={"public_key": ["Paste or upload a public key, or give a JWKS URI."]},
            )
        return agent_keys.key_add(
            actor=admin_principal(request), organization_id=agent.organization_id,
            agent_id=agent.id, jwk_value=public_key_read(text) if text.strip() else None,
            jwks_uri=uri or None,
        )  # fmt: skip

    def delete_model(self, request: HttpRequest, obj: AgentKey) -> None:
        agent_keys.key_delete(
            actor=admin_principal(request), organization_id=obj.organization_id,
            agent_id=obj.agent_id, kid=obj.kid,
        )  # fmt: skip

    def delete_consequences(self, request: HttpRequest, obj: AgentKey) -> list[str]:
        return [
            f"Assertions signed with {obj.kid} are refused from now on.",
            "Tokens issued on its assertions are revoked, with every token exchanged from them.",
        ]
