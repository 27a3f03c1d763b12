"""Health endpoints for load balancers and Django's error handlers."""

import logging
import sys

import redis
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.csrf import csrf_failure as django_csrf_failure

from agentidp.errors import standard_problem
from agentidp.middleware import (
    ADMIN_PREFIX,
    is_unavailable,
    safe_methods_only,
    unavailable_response,
)

logger = logging.getLogger("agentidp.health")


@safe_methods_only
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive."""
    return JsonResponse({"status": "ok"})


@safe_methods_only
def readyz(request: HttpRequest) -> JsonResponse:
    """The database and Redis answer; 503 naming the failing check otherwise."""
    checks: dict[str, str] = {}
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception:  # any driver error means not ready
        logger.warning("readiness: database check failed", exc_info=True)
        checks["database"] = "unavailable"
    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1
        )
        client.ping()
        checks["redis"] = "ok"
    except redis.RedisError:
        logger.warning("readiness: redis check failed", exc_info=True)
        checks["redis"] = "unavailable"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )


# The admin is a browser's HTML application: its errors stay Django's pages.


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith(ADMIN_PREFIX):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return standard_problem(request, 413)
    return standard_problem(request, 400)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith(ADMIN_PREFIX):
        return defaults.permission_denied(request, exception)
    return standard_problem(request, 403)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith(ADMIN_PREFIX):
        return defaults.page_not_found(request, exception)
    return standard_problem(request, 404)


def server_error(request: HttpRequest) -> HttpResponse:
    caught = sys.exc_info()[1]
    if caught is not None and is_unavailable(caught):
        return unavailable_response(request)
    if request.path.startswith(ADMIN_PREFIX):
        return defaults.server_error(request)
    return standard_problem(request, 500)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """``CSRF_FAILURE_VIEW``: the admin keeps Django's page, the API answers a problem."""
    if request.path.startswith(ADMIN_PREFIX):
        return django_csrf_failure(request, reason)
    return standard_problem(
        request, 403, detail=f"CSRF check failed: {reason or 'no token'}; send X-CSRFToken."
    )
