"""Domain exceptions and the one DRF exception handler that renders RFC 9457 problems."""

from collections.abc import Mapping, Sequence
from typing import cast

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

from agentidp.conf import agentidp_settings

PROBLEM_CONTENT_TYPE = "application/problem+json"
JSONValue = str | int | float | bool | None | list["JSONValue"] | dict[str, "JSONValue"]
FieldErrors = dict[str, list[str]]


class TenancyError(RuntimeError):
    """A tenant table was queried with no organization context: a programming error."""


class DomainError(Exception):
    """Base of the errors services raise; each maps to one problem type and status."""

    status: int = 400
    code: str = "invalid_request"
    title: str = "Invalid request"

    def __init__(self, detail: str, *, errors: FieldErrors | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}


class ValidationFailed(DomainError):
    """Input that is well-formed but breaks a rule; names the offending fields."""

    status = 400
    code = "validation_failed"
    title = "Validation failed"


class NotFound(DomainError):
    """The object does not exist or belongs to another organization (indistinguishable)."""

    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(DomainError):
    """The request conflicts with the object's current state."""

    status = 409
    code = "conflict"
    title = "Conflict"


class QuotaExceeded(Conflict):
    """An organization's plan quota would be exceeded."""

    code = "quota_exceeded"
    title = "Quota exceeded"


class Forbidden(DomainError):
    """The principal may not perform this action."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


def problem_body(
    *, status: int, title: str, detail: str, code: str | None, instance: str, errors: FieldErrors
) -> dict[str, JSONValue]:
    body: dict[str, JSONValue] = {
        "type": f"urn:agentidp:problem:{code}" if code else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if errors:
        body["errors"] = {name: list(messages) for name, messages in errors.items()}
    return body


def _flatten(detail: object, prefix: str = "") -> FieldErrors:
    """Turn DRF's nested error detail into ``{"field.sub": [messages]}``."""
    out: FieldErrors = {}
    if isinstance(detail, Mapping):
        for key, value in detail.items():
            if isinstance(key, int):
                name = f"{prefix}[{key}]"
            else:
                name = f"{prefix}.{key}" if prefix else str(key)
            if key == "non_field_errors" and not prefix:
                name = "body"
            for sub, messages in _flatten(value, name).items():
                out.setdefault(sub, []).extend(messages)
    elif isinstance(detail, Sequence) and not isinstance(detail, str):
        for index, item in enumerate(detail):
            if isinstance(item, Mapping | list):
                out.update(_flatten(item, f"{prefix}[{index}]"))
            else:
                out.setdefault(prefix or "body", []).append(str(item))
    else:
        out.setdefault(prefix or "body", []).append(str(detail))
    return out


_DRF_TITLES: dict[type[drf_exceptions.APIException], tuple[str, str]] = {
    drf_exceptions.ValidationError: ("validation_failed", "Validation failed"),
    drf_exceptions.ParseError: ("malformed_request", "Malformed request"),
    drf_exceptions.NotAuthenticated: ("unauthenticated", "Authentication required"),
    drf_exceptions.AuthenticationFailed: ("unauthenticated", "Authentication required"),
    drf_exceptions.PermissionDenied: ("forbidden", "Forbidden"),
    drf_exceptions.NotFound: ("not_found", "Not found"),
    drf_exceptions.MethodNotAllowed: ("method_not_allowed", "Method not allowed"),
    drf_exceptions.UnsupportedMediaType: ("unsupported_media_type", "Unsupported media type"),
    drf_exceptions.NotAcceptable: ("not_acceptable", "Not acceptable"),
    drf_exceptions.Throttled: ("rate_limited", "Too many requests"),
}


def problem_exception_handler(exc: Exception, context: Mapping[str, object]) -> Response | None:
    """DRF ``EXCEPTION_HANDLER``: every API error leaves as ``application/problem+json``."""
    request = cast(HttpRequest | None, context.get("request"))
    instance = request.path if request is not None else ""
    headers: dict[str, str] = {}
    if isinstance(exc, DomainError):
        body = problem_body(
            status=exc.status,
            title=exc.title,
            detail=exc.detail,
            code=exc.code,
            instance=instance,
            errors=exc.errors,
        )
        return Response(body, status=exc.status, content_type=PROBLEM_CONTENT_TYPE)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if not isinstance(exc, drf_exceptions.APIException):
        return None
    code, title = _DRF_TITLES.get(type(exc), ("error", "Error"))
    errors: FieldErrors = {}
    if isinstance(exc, drf_exceptions.ValidationError):
        errors = _flatten(exc.detail)
        names = ", ".join(sorted(errors))
        detail = f"Invalid input in: {names}." if names else "Invalid input."
    else:
        detail = str(exc.detail)
    if isinstance(exc, drf_exceptions.NotAuthenticated | drf_exceptions.AuthenticationFailed):
        view = context.get("view")
        auth_header = getattr(view, "get_authenticate_header", None)
        if request is not None and auth_header is not None:
            value = auth_header(request)
            if value:
                headers["WWW-Authenticate"] = str(value)
    wait = getattr(exc, "wait", None)
    if isinstance(exc, drf_exceptions.Throttled) and isinstance(wait, int | float):
        headers["Retry-After"] = str(int(wait))
    body = problem_body(
        status=exc.status_code,
        title=title,
        detail=detail,
        code=code,
        instance=instance,
        errors=errors,
    )
    return Response(
        body, status=exc.status_code, headers=headers, content_type=PROBLEM_CONTENT_TYPE
    )


# Paths that speak RFC 6749 error JSON instead of problem+json.
OAUTH_ENDPOINTS = frozenset({"/oauth2/token", "/oauth2/revoke", "/oauth2/introspect"})
_OAUTH_ERRORS = {
    400: "invalid_request",
    401: "invalid_client",
    405: "invalid_request",
    413: "invalid_request",
    429: "temporarily_unavailable",
    503: "temporarily_unavailable",
}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def problem_response(
    request: HttpRequest,
    *,
    status: int,
    title: str,
    detail: str,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JsonResponse:
    """An error in the format of the endpoint it answers, for errors raised outside DRF.

    RFC 6749 error JSON on the OAuth endpoints, RFC 9457 problem+json everywhere else: the
    middleware, Django's error handlers and the CSRF failure view all answer through here.
    """
    response: JsonResponse
    if request.path in OAUTH_ENDPOINTS:
        error = _OAUTH_ERRORS.get(status, "server_error" if status >= 500 else "invalid_request")
        response = JsonResponse({"error": error, "error_description": detail}, status=status)
        for header, value in NO_STORE.items():
            response[header] = value
    else:
        body = problem_body(
            status=status, title=title, detail=detail, code=code, instance=request.path, errors={}
        )
        response = JsonResponse(body, status=status, content_type=PROBLEM_CONTENT_TYPE)
    for header, value in (headers or {}).items():
        response[header] = value
    return response


# The standard problem of each status the middleware and handlers answer with by themselves.
STANDARD_PROBLEMS: dict[int, tuple[str, str, str]] = {
    400: ("malformed_request", "Malformed request", "The request could not be parsed."),
    401: ("unauthenticated", "Authentication required", "Authentication required."),
    403: ("forbidden", "Forbidden", "The request was refused."),
    404: ("not_found", "Not found", "No such resource."),
    405: ("method_not_allowed", "Method not allowed", "The method is not allowed here."),
    413: ("payload_too_large", "Payload too large", "The request body is too large."),
    500: ("server_error", "Internal server error", "An unexpected error occurred."),
    503: (
        "unavailable",
        "Service unavailable",
        "A service this request needs is unavailable; retry shortly.",
    ),
}


def standard_problem(
    request: HttpRequest,
    status: int,
    *,
    detail: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JsonResponse:
    """The documented error for ``status`` (see :data:`STANDARD_PROBLEMS`)."""
    code, title, default = STANDARD_PROBLEMS.get(status, ("error", "Error", "The request failed."))
    return problem_response(
        request, status=status, title=title, detail=detail or default, code=code, headers=headers
    )


# RFC 9728 3.1: the metadata of the resource {issuer}/api (the platform API's audience).
PROTECTED_RESOURCE_PATH = "/.well-known/oauth-protected-resource"


def protected_resource_metadata_url() -> str:
    """Where the platform API's RFC 9728 metadata is: the well-known path with the resource's
    path (``/api``) after it."""
    return f"{agentidp_settings().issuer}{PROTECTED_RESOURCE_PATH}/api"


def bearer_challenge(**params: str) -> str:
    """The ``WWW-Authenticate`` of every refusal of the platform API (RFC 6750 3; ``error``,
    ``error_description``, ``scope`` as given), naming its metadata document (RFC 9728 5.1)
    so a client learns from a 401 alone which authorization server to ask."""
    attributes = {"realm": "agentidp", **params,
                  "resource_metadata": protected_resource_metadata_url()}  # fmt: skip
    return auth_challenge("Bearer", attributes)


def auth_challenge(scheme: str, attributes: dict[str, str]) -> str:
    """An RFC 9110 11.6.1 challenge: ``scheme`` and its attributes as quoted strings."""
    quoted = (value.replace("\\", "\\\\").replace('"', '\\"') for value in attributes.values())
    return f"{scheme} " + ", ".join(f'{k}="{v}"' for k, v in zip(attributes, quoted, strict=True))


def _dummy_get_response(request: HttpRequest) -> None:  # pragma: no cover - never called
    return None
