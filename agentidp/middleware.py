"""Middleware at the edge: the documented error format everywhere, and the input boundary.

* :class:`ErrorFormatMiddleware` (outermost) answers every error outside the admin in the
  documented format, with ``DEBUG`` on or off: an exception in a view becomes a problem (503
  with ``Retry-After`` when PostgreSQL or Redis is unreachable, 500 otherwise, never a stack
  trace), and an HTML error page produced anywhere beneath (Django's 404 and 405, a debug page)
  is replaced by the problem of the same status.
* :class:`InputBoundaryMiddleware` refuses, before any view, a body over
  ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (413), and a NUL or lone surrogate in the path, a query or
  form value (400).
"""

import logging
import sys
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Concatenate, ParamSpec, cast

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.middleware.security import SecurityMiddleware
from django.urls import Resolver404, get_urlconf, resolve
from django.views import View
from django.views.decorators.http import require_safe
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentidp.boundary import InputRejected, texts_check
from agentidp.errors import OAUTH_ENDPOINTS, bearer_challenge, problem_response, standard_problem
from agentidp.secrets import SecretStoreUnavailable

logger = logging.getLogger("agentidp.errors")

RETRY_AFTER_SECONDS = 5
# An unreachable database or Redis: the request may succeed if retried shortly.
# A store the request needs is down: 503 with Retry-After, nothing applied.
UNAVAILABLE = (
    OperationalError,
    InterfaceError,
    RedisConnectionError,
    RedisTimeoutError,
    SecretStoreUnavailable,
)
ADMIN_PREFIX = "/admin/"
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate", "Location")
_EXCEPTION_ATTR = "_agentidp_exception"


P = ParamSpec("P")


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, UNAVAILABLE)


def unavailable_response(request: HttpRequest) -> HttpResponse:
    """503 in the endpoint's format; the admin, a browser page, gets plain HTML."""
    if request.path.startswith(ADMIN_PREFIX):
        response = HttpResponse(
            "<h1>Service unavailable</h1><p>Retry in a few seconds.</p>", status=503
        )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return standard_problem(request, 503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def exception_response(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """What an exception escaping a view or middleware becomes."""
    if is_unavailable(exc):
        logger.warning(
            "service unavailable: %s on %s %s", type(exc).__name__, request.method, request.path
        )
        return unavailable_response(request)
    logger.error(
        "unhandled %s on %s %s",
        type(exc).__name__,
        request.method,
        request.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return standard_problem(request, 500)


def _note_exception(sender: object, request: HttpRequest | None = None, **kwargs: object) -> None:
    """``got_request_exception``: keep what Django turned into an error page, for the
    middleware above it to answer in the right format."""
    if request is not None:
        setattr(request, _EXCEPTION_ATTR, sys.exc_info()[1])


got_request_exception.connect(_note_exception, dispatch_uid="agentidp-note-exception")


# Error bodies a view documents itself: JSON, problem+json, and DID Resolution results (whose
# errors are part of the result: W3C DID Resolution's HTTP binding).
DOCUMENTED_ERROR_TYPES = (
    "application/json",
    "application/problem+json",
    "application/did-resolution",
)


def _is_documented(response: HttpResponse) -> bool:
    content_type = response.get("Content-Type", "")
    return content_type.startswith(DOCUMENTED_ERROR_TYPES)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class TransportSecurityMiddleware(SecurityMiddleware):
    """Django's ``SecurityMiddleware`` (``SECURE_SSL_REDIRECT``, HSTS, nosniff, referrer and
    cross-origin-opener policies), first in the stack, with what an identity provider adds:

    * ``X-Forwarded-Proto`` (``SECURE_PROXY_SSL_HEADER``) counts only when the connection comes
      from one of ``AGENTIDP_TRUSTED_PROXIES``; from anyone else it is dropped before Django
      reads it, so a client cannot declare its plain-HTTP request secure.
    * With enforcement on, a plain-HTTP write (anything but GET, HEAD, OPTIONS) or any call to
      an OAuth endpoint is refused with 403 in the endpoint's error format instead of being
      redirected: the credential or body it carried has already crossed the network in clear,
      and a client that follows the redirect would send it again.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        super().__init__(get_response)
        self.trusted_proxies = frozenset(settings.TRUSTED_PROXIES)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        header = settings.SECURE_PROXY_SSL_HEADER[0]
        if header in request.META and request.META.get("REMOTE_ADDR") not in self.trusted_proxies:
            del request.META[header]
        if self.redirect and not request.is_secure():
            path = request.path.lstrip("/")
            exempt = any(pattern.search(path) for pattern in self.redirect_exempt)
            if not exempt and (
                request.method not in SAFE_METHODS or request.path in OAUTH_ENDPOINTS
            ):
                return problem_response(
                    request,
                    status=403,
                    title="HTTPS required",
                    detail="This endpoint accepts only HTTPS; the request was refused, not "
                    "redirected. Send it again over HTTPS and treat any credential it carried "
                    "as exposed.",
                    code="https_required",
                )
            if not exempt and not self.redirect_host:
                return _no_https_address(request)
        return cast(HttpResponse, super().__call__(request))


def _no_https_address(request: HttpRequest) -> HttpResponse:
    """A plain-HTTP read with TLS enforced and no HTTPS address to send it to (the issuer is
    http): redirecting to https on this very host and port would lead nowhere. Say what to do
    instead: HTML for a browser, a problem for anything else."""
    detail = (
        "This deployment serves only HTTPS (AGENTIDP_TLS_ENFORCED), and its issuer "
        f"({settings.AGENTIDP['ISSUER']}) names no HTTPS address to send you to. Reach it "
        "through its TLS-terminating proxy (listed in AGENTIDP_TRUSTED_PROXIES), or set "
        "AGENTIDP_ISSUER to its public https URL."
    )
    if "text/html" in request.headers.get("Accept", ""):
        return HttpResponse(
            f"<!doctype html><title>HTTPS required</title><h1>HTTPS required</h1><p>{detail}</p>",
            status=403,
        )
    return problem_response(
        request, status=403, title="HTTPS required", detail=detail, code="https_required"
    )


class ErrorFormatMiddleware:
    """Outermost: every error outside the admin leaves in the documented format."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code < 400 or _is_documented(response):
            return response
        caught = getattr(request, _EXCEPTION_ATTR, None)
        if isinstance(caught, BaseException) and is_unavailable(caught):
            return unavailable_response(request)
        if request.path.startswith(ADMIN_PREFIX):
            return response  # the admin is a browser's HTML application
        replacement = standard_problem(request, response.status_code)
        for header in _KEPT_HEADERS:
            if header in response:
                replacement[header] = response[header]
        return replacement

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        """An exception from a view: answered here, so Django's debug page never shows."""
        if request.path.startswith(ADMIN_PREFIX) and not is_unavailable(exc):
            return None
        return exception_response(request, exc)


class InputBoundaryMiddleware:
    """Size limit and text check on every request, before sessions, CSRF or any view."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        allowed = allowed_methods(request.path_info)
        if allowed is not None and (request.method or "") not in allowed:
            # Before authentication and CSRF: a method the resource lacks is a 405 for anyone.
            return standard_problem(request, 405, headers={"Allow": ", ".join(allowed)})
        refused = credential_in_query(request)
        if refused is not None:
            return refused
        try:
            self._check(request)
        except (RequestDataTooBig, _TooLarge):
            return standard_problem(
                request,
                413,
                detail=f"The request body exceeds {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
            )
        except TooManyFieldsSent:
            return standard_problem(request, 400, detail="Too many form fields.")
        except InputRejected as exc:
            return standard_problem(request, 400, detail=exc.detail)
        except SuspiciousOperation:
            return standard_problem(request, 400)
        return self.get_response(request)

    def _check(self, request: HttpRequest) -> None:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            declared = int(length)
        except ValueError as exc:
            raise InputRejected("The Content-Length header is not a number.") from exc
        if limit is not None and declared > limit:
            raise _TooLarge
        texts_check([("path", request.path)], where="path")
        texts_check(
            ((key, value) for key, values in request.GET.lists() for value in values),
            where="query parameter",
        )
        if request.method in ("POST", "PUT", "PATCH") and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            texts_check(
                ((key, value) for key, values in request.POST.lists() for value in values),
                where="form field",
            )


# Credentials never travel in a URI: it is logged, cached and sent on in Referer headers.
QUERY_REFUSED_EVERYWHERE = frozenset({"access_token"})
QUERY_REFUSED_ON_OAUTH = frozenset(
    {"client_secret", "client_assertion", "assertion", "subject_token", "actor_token", "token",
     "refresh_token", "code", "password"}
)  # fmt: skip


def credential_in_query(request: HttpRequest) -> HttpResponse | None:
    """400 for a credential in the query string (RFC 6750 2.3: we do not accept a bearer token
    there; RFC 6749 2.3.1: nor client credentials), in the endpoint's format, before anything
    reads it; ``None`` when there is none."""
    if not request.META.get("QUERY_STRING"):
        return None
    names = {name.lower() for name in request.GET}
    oauth = request.path in OAUTH_ENDPOINTS
    found = sorted(
        names & (QUERY_REFUSED_EVERYWHERE | (QUERY_REFUSED_ON_OAUTH if oauth else set()))
    )
    if not found:
        return None
    headers = (
        {}
        if oauth
        else {
            "WWW-Authenticate": bearer_challenge(
                error="invalid_request", error_description="no token in the URI"
            )
        }
    )
    where = "the request body" if oauth else "the Authorization header"
    return standard_problem(
        request, 400,
        detail=f"Credentials are not accepted in the URI ({', '.join(found)}); send them in "
        f"{where}, and treat them as exposed.",
        headers=headers,
    )  # fmt: skip


def allowed_methods(path: str) -> list[str] | None:
    """The methods the view at ``path`` answers, or None when that cannot be told (unknown
    paths, the admin): DRF viewsets' routed actions, a class-based view's handlers, or what a
    function view declares with :func:`safe_methods_only`. Remembered per path and URLconf
    (a bounded LRU): resolving a path walks every URL pattern."""
    if path.startswith(ADMIN_PREFIX):
        return None
    return _allowed_methods(path, str(get_urlconf() or settings.ROOT_URLCONF))


@lru_cache(maxsize=4096)
def _allowed_methods(path: str, urlconf: str) -> list[str] | None:
    try:
        match = resolve(path, urlconf)
    except Resolver404:
        return None
    callback = match.func
    routed: Mapping[str, str] | None = getattr(callback, "actions", None)
    if routed:
        methods = {method.upper() for method in routed}
        return sorted(methods | {"OPTIONS"} | ({"HEAD"} if "GET" in methods else set()))
    view_class: type[View] | None = getattr(callback, "view_class", None)
    if view_class is not None:
        return sorted(m.upper() for m in view_class.http_method_names if hasattr(view_class, m))
    declared: list[str] | None = getattr(callback, "allowed_methods", None)
    return declared


def safe_methods_only(
    view: Callable[Concatenate[HttpRequest, P], HttpResponse],
) -> Callable[Concatenate[HttpRequest, P], HttpResponse]:
    """``require_safe`` that also tells :func:`allowed_methods` what the view answers."""
    wrapped = require_safe(view)
    wrapped.allowed_methods = ["GET", "HEAD"]  # type: ignore[attr-defined]
    return wrapped


class _TooLarge(Exception):
    """A declared body size over the limit."""
