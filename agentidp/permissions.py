"""The policy check DRF runs before every API action (kept free of view imports)."""

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from agentidp.policy import Resource, authorize
from agentidp.principals import Principal

if TYPE_CHECKING:  # importing views at runtime would cycle through DRF's settings
    from rest_framework.views import APIView


class PolicyPermission(BasePermission):
    """Asks :func:`agentidp.policy.authorize` for the view's action and scope."""

    def has_permission(self, request: Request, view: "APIView") -> bool:
        return _allowed(request, view, organization_id=None)

    def has_object_permission(self, request: Request, view: "APIView", obj: object) -> bool:
        organization_id = cast(uuid.UUID | None, getattr(obj, "organization_id", None))
        return _allowed(request, view, organization_id=organization_id)


def _allowed(request: Request, view: "APIView", *, organization_id: uuid.UUID | None) -> bool:
    principal = request.user
    if not isinstance(principal, Principal):
        return False
    scope = view_scope(view)
    if scope is None:
        return True
    resource = Resource(
        type=getattr(view, "resource_type", "unknown"), organization_id=organization_id
    )
    return authorize(
        principal,
        action=view_action(view),
        scope=scope,
        resource=resource,
        safe=request.method in SAFE_METHODS,
    )


def view_action(view: "APIView") -> str:
    return str(getattr(view, "action", None) or (view.request.method or "").lower())


def view_scope(view: "APIView") -> str | None:
    scopes: Mapping[str, str] = getattr(view, "required_scopes", {})
    return scopes.get(view_action(view))
