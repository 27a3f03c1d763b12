"""Admin for agents' clients and secrets: metadata only, with rotate and revoke actions."""

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from agentidp.admin import (
    ManagedByScope,
    admin_principal,
    run_service_action,
    scoped_to_principal,
)
from agentidp.errors import DomainError
from agentidp.principals import Principal
from credentials import services
from credentials.models import Client, ClientSecret
from organizations.choices import Scope


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

    @admin.display(description="status")
    def status(self, obj: ClientSecret) -> str:
        return obj.status_at(timezone.now())

    def get_queryset(self, request: HttpRequest) -> QuerySet[ClientSecret]:
        return scoped_to_principal(request, super().get_queryset(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # issued through the API or `createagent --with-credentials`: shown once

    def has_change_permission(self, request: HttpRequest, obj: ClientSecret | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ClientSecret | None = None) -> bool:
        return False

    @admin.action(
        permissions=["write"], description="Rotate selected secrets (new secrets shown once)"
    )
    def rotate(self, request: HttpRequest, queryset: QuerySet[ClientSecret]) -> HttpResponse | None:
        """Render the new secrets in this response only: never in a message (which the session
        would store), a log or a later page."""
        rotated: list[dict[str, str]] = []

        def rotate_one(actor: Principal, secret: ClientSecret) -> None:
            issued = services.credential_rotate(
                actor=actor,
                organization_id=secret.organization_id,
                agent_id=secret.client.agent_id,
                credential_id=secret.id,
            )
            secret.refresh_from_db()
            rotated.append(
                {
                    "client_id": issued.client_id,
                    "secret": issued.secret,
                    "old_expires_at": str(secret.expires_at),
                }
            )

        run_service_action(self, request, queryset, rotate_one, "Rotated")
        if not rotated:
            return None
        response = TemplateResponse(
            request,
            "admin/credentials/rotated.html",
            {**self.admin_site.each_context(request), "rotated": rotated, "title": "New secrets"},
        )
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(permissions=["write"], description="Revoke selected secrets now")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ClientSecret]) -> None:
        run_service_action(
            self, request, queryset,
            lambda actor, secret: services.credential_revoke(
                actor=actor, organization_id=secret.organization_id,
                agent_id=secret.client.agent_id, credential_id=secret.id,
            ),
            "Revoked",
        )  # fmt: skip


class ClientAdmin(ManagedByScope[Client], admin.ModelAdmin[Client]):
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
    ]  # fmt: skip
    readonly_fields = ["client_id", "agent"]
    list_select_related = ["agent", "organization"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Client]:
        return scoped_to_principal(request, super().get_queryset(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Client | None = None) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: Client, form: forms.ModelForm[Client], change: bool
    ) -> None:
        try:
            services.client_scopes_set(
                actor=admin_principal(request),
                organization_id=obj.organization_id,
                agent_id=obj.agent_id,
                scopes=list(form.cleaned_data["allowed_scopes"]),
            )
            services.client_signing_set(
                actor=admin_principal(request),
                organization_id=obj.organization_id,
                agent_id=obj.agent_id,
                id_token_signed_response_alg=form.cleaned_data["id_token_signed_response_alg"],
                userinfo_signed_response_alg=form.cleaned_data["userinfo_signed_response_alg"],
            )
        except DomainError as exc:
            raise forms.ValidationError(exc.detail) from exc
