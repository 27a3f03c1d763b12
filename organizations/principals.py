"""Resolves a staff session into a principal (a resolver for the tenancy middleware)."""

from django.http import HttpRequest

from agentidp.principals import Principal, PrincipalStatus
from agentidp.tenancy import platform_context
from organizations.choices import PLATFORM_SCOPES, ROLE_SCOPES, OrganizationStatus
from organizations.models import StaffMembership


def staff_session_principal(request: HttpRequest) -> Principal | None:
    """A logged-in staff user becomes a principal of their membership's organization.

    The membership is read before the organization is known, so it goes through the platform
    context; superusers are platform principals holding every scope.
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.is_active or not user.is_staff:
        return None
    with platform_context(reason="staff-principal"):
        membership = (
            StaffMembership.objects.select_related("organization").filter(user_id=user.pk).first()
        )
    request.principal_via_session = True  # type: ignore[attr-defined]
    scopes: frozenset[str] = frozenset()
    organization_id = None
    status = PrincipalStatus.ACTIVE
    if membership is not None:
        organization_id = membership.organization_id
        scopes = ROLE_SCOPES.get(membership.role, frozenset())
        if membership.organization.status != OrganizationStatus.ACTIVE:
            status = PrincipalStatus.SUSPENDED
    if user.is_superuser:
        scopes = scopes | PLATFORM_SCOPES | frozenset().union(*ROLE_SCOPES.values())
    return Principal(
        kind="user",
        id=str(user.pk),
        organization_id=organization_id,
        scopes=scopes,
        is_platform=bool(user.is_superuser),
        status=status,
        display=user.get_username(),
        role="platform" if user.is_superuser else (membership.role if membership else ""),
    )
