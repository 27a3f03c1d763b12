"""Admin for signing keys (platform staff: their lifecycle and "rotate now") and for issued
access tokens (DOT's ``ACCESS_TOKEN_ADMIN_CLASS``): metadata only.

DOT's own admin revokes by deleting the row; our tokens are self-contained JWTs, so revoking
must list the ``jti`` in the revocation list, which only the service does.
"""

import uuid

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from agentidp.admin import (
    ManagedByScope,
    PlatformOnly,
    action_hidden_fields,
    admin_principal,
    confirmation_page,
    confirmed,
    run_service_action,
    scoped_to_principal,
)
from agentidp.errors import DomainError
from agentidp.secrets import SecretStoreError
from agentidp.words import plural
from agents.models import MAX_DELEGATION_DEPTH
from oidc.models import AccessToken, SigningKey
from oidc.services import access_token_revoke, signing_key_rotate
from organizations.choices import Scope


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
