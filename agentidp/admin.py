"""The admin site's branding and contents, and helpers shared by the app admins: the acting
principal and service-backed actions."""

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from django.apps import apps
from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from agentidp.errors import DomainError
from agentidp.principals import Principal

M = TypeVar("M", bound=Model)


def admin_principal(request: HttpRequest) -> Principal:
    """The principal the tenancy middleware resolved for this admin session."""
    principal = getattr(request, "principal", None)
    if not isinstance(principal, Principal):
        raise PermissionError("admin request without a principal")
    return principal


Q = TypeVar("Q", bound=Model)


def scoped_to_principal(
    request: HttpRequest, queryset: QuerySet[Q], field: str = "organization_id"
) -> QuerySet[Q]:
    """Platform staff see every organization's rows; others only their organization's (RLS
    enforces the same; this is the second lock); staff without one see nothing."""
    principal = admin_principal(request)
    if principal.is_platform:
        return queryset
    if principal.organization_id is None:
        return queryset.none()
    return queryset.filter(**{field: principal.organization_id})


def run_service_action(
    modeladmin: admin.ModelAdmin[M],
    request: HttpRequest,
    objects: Iterable[M],
    call: Callable[[Principal, M], object],
    verb: str,
) -> None:
    """Apply a service to each selected object, reporting refusals instead of failing."""
    principal = admin_principal(request)
    done = 0
    for obj in objects:
        try:
            call(principal, obj)
            done += 1
        except DomainError as exc:
            modeladmin.message_user(request, f"{obj}: {exc.detail}", messages.ERROR)
    if done:
        modeladmin.message_user(request, f"{verb} {done} object(s).", messages.SUCCESS)
    return


class ManagedByScope(Generic[M]):
    """An admin seen by a principal holding ``admin_scope`` and changed (add, change, delete,
    actions) by one holding ``write_scope`` (``admin_scope`` when empty): platform staff, and the
    organization's members whose role grants it, as in the API. A role without the write scope
    reads the pages; an auditor, whose role holds only ``audit:read``, sees none of them."""

    admin_scope: str = ""
    write_scope: str = ""

    def _holds(self, request: HttpRequest, scope: str) -> bool:
        principal = getattr(request, "principal", None)  # none before login
        return isinstance(principal, Principal) and (
            principal.is_platform or scope in principal.scopes
        )

    def _manages(self, request: HttpRequest) -> bool:
        return self._holds(request, self.admin_scope)

    def has_write_permission(self, request: HttpRequest) -> bool:
        """What every action declares (``permissions=["write"]``), and what adding, changing
        and deleting need: a reader is offered none of them."""
        return self._holds(request, self.write_scope or self.admin_scope)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._manages(request) and super().has_module_permission(request)  # type: ignore[misc]

    def has_view_permission(self, request: HttpRequest, obj: M | None = None) -> bool:
        return self._manages(request) and super().has_view_permission(request, obj)  # type: ignore[misc]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_write_permission(request) and super().has_add_permission(request)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: M | None = None) -> bool:
        return self.has_write_permission(request) and super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: M | None = None) -> bool:
        return self.has_write_permission(request) and super().has_delete_permission(request, obj)  # type: ignore[misc]


class PlatformOnly:
    """An admin of deployment-wide rows, seen by platform staff only and changed by no one
    through its forms (actions go through services)."""

    def _platform(self, request: HttpRequest) -> bool:
        principal = getattr(request, "principal", None)  # none on the login page
        return isinstance(principal, Principal) and principal.is_platform

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._platform(request)

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return self._platform(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# --- the site --------------------------------------------------------------------------------

# This server issues client_credentials tokens only: no authorization codes (grants), id tokens
# or refresh tokens; beat schedules are intervals and crontabs; staff permissions come from
# roles, not hand-made groups.
MEANINGLESS_HERE = (
    "oauth2_provider.Grant",
    "oidc.IDToken",
    "oidc.RefreshToken",
    "auth.Group",
    "django_celery_beat.SolarSchedule",
    "django_celery_beat.ClockedSchedule",
)


def admin_site_configure() -> None:
    """Brand the admin and keep only the models that mean something here. Called from
    ``AgentIdPConfig.ready()``, after every app's admin module has registered its models."""
    admin.site.site_header = "AgentIdP administration"
    admin.site.site_title = "AgentIdP"
    admin.site.index_title = "Organizations, agents, credentials and audit"
    admin.site.site_url = "/"  # "view site": the landing page (admin, API docs, health, metrics)
    for label in MEANINGLESS_HERE:
        model = apps.get_model(label)
        if admin.site.is_registered(model):
            admin.site.unregister(model)
