"""Admin for issued access tokens (DOT's ``ACCESS_TOKEN_ADMIN_CLASS``): metadata only.

DOT's own admin revokes by deleting the row; our tokens are self-contained JWTs, so revoking
must list the ``jti`` in the revocation list, which only the service does.
"""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from agentidp.admin import run_service_action, scoped_to_principal
from oidc.models import AccessToken
from oidc.services import access_token_revoke


class AccessTokenAdmin(admin.ModelAdmin[AccessToken]):
    list_display = ["jti", "application", "scope", "expires", "organization"]
    list_filter = ["expires"]
    search_fields = ["jti", "application__client_id"]
    fields = ["jti", "application", "scope", "expires", "resource"]
    readonly_fields = ["jti", "application", "scope", "expires", "resource"]
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

    @admin.action(description="Revoke selected access tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[AccessToken]) -> None:
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
