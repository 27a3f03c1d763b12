"""DRF authentication that reads the principal the tenancy middleware already resolved.

The middleware must know the organization before any view runs (it sets it on the
transaction), so it authenticates the request itself; DRF only picks the result up here.
"""

from django.http import HttpRequest
from rest_framework.authentication import BaseAuthentication, CSRFCheck
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request

from agentidp.errors import bearer_challenge
from agentidp.principals import Principal


def _dummy_get_response(request: HttpRequest) -> None:  # pragma: no cover - never called
    return None


class PrincipalAuthentication(BaseAuthentication):
    """Returns ``request.principal``; session principals must pass the CSRF check."""

    def authenticate(self, request: Request) -> tuple[Principal, None] | None:
        principal: Principal | None = getattr(request._request, "principal", None)
        if principal is None:
            return None
        if getattr(request._request, "principal_via_session", False):
            self._enforce_csrf(request)
        return (principal, None)

    def _enforce_csrf(self, request: Request) -> None:
        check = CSRFCheck(_dummy_get_response)  # type: ignore[arg-type]
        check.process_request(request)
        reason = check.process_view(request, None, (), {})  # type: ignore[arg-type]
        if reason:
            raise PermissionDenied(f"CSRF Failed: {reason}")

    def authenticate_header(self, request: Request) -> str:
        return bearer_challenge()
