"""Health endpoints for load balancers and Django's error handlers."""

import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import redis
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views import defaults
from django.views.csrf import csrf_failure as django_csrf_failure

from agentidp.conf import agentidp_settings
from agentidp.deadlines import deadline
from agentidp.errors import standard_problem
from agentidp.middleware import (
    ADMIN_PREFIX,
    is_unavailable,
    safe_methods_only,
    unavailable_response,
)

logger = logging.getLogger("agentidp.health")


@safe_methods_only
def home(request: HttpRequest) -> HttpResponse:
    """The landing page: where the admin, the API's documentation, discovery, health and
    metrics are (the admin's "View site" leads here)."""
    return render(request, "agentidp/home.html", {"issuer": agentidp_settings().issuer})


@safe_methods_only
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive."""
    return JsonResponse({"status": "ok"})


READINESS_SECONDS = 1.5
_probes = ThreadPoolExecutor(max_workers=2, thread_name_prefix="agentidp-readiness")
_probing: dict[str, Future[None]] = {}


def _database_probe() -> None:
    """On the probe's own thread, with its own connection (kept between probes)."""
    connection = connections["default"]
    reused = connection.connection is not None
    try:
        _select_one(connection)
    except Exception:
        connection.close()
        if not reused:
            raise
        _select_one(connection)  # the kept connection was lost (a restart): a fresh one


def _select_one(connection: BaseDatabaseWrapper) -> None:
    try:
        connection.ensure_connection()  # connect_timeout bounds a server that does not answer
        with deadline(_socket(connection), READINESS_SECONDS):
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
    except Exception:
        connection.close()
        raise


def _socket(connection: BaseDatabaseWrapper) -> int | None:
    raw = connection.connection
    return None if raw is None or raw.closed else int(raw.fileno())


def _redis_probe() -> None:
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=READINESS_SECONDS, socket_connect_timeout=1
    )
    client.ping()


def _probe_start(name: str, check: Callable[[], None]) -> Future[None] | None:
    """The probe's future, or ``None`` when one started by an earlier request is still stuck
    (its server froze): it is not started again, and the answer is unavailable at once."""
    running = _probing.get(name)
    if running is not None and not running.done():
        return None
    future = _probing[name] = _probes.submit(check)
    return future


def _probe_result(name: str, future: Future[None] | None, until: float) -> str:
    if future is None:
        return "unavailable"
    try:
        future.result(timeout=max(until - time.monotonic(), 0))
    except FutureTimeout:
        logger.warning("readiness: %s did not answer within %ss", name, READINESS_SECONDS)
        return "unavailable"
    except Exception:  # any driver error means not ready
        logger.warning("readiness: %s check failed", name, exc_info=True)
        return "unavailable"
    return "ok"


@safe_methods_only
def readyz(request: HttpRequest) -> JsonResponse:
    """The database and Redis answer, within 1.5 s together (each checked at once on a thread
    of its own, so a frozen server costs the wait, not the request); 503 naming the failing
    check."""
    until = time.monotonic() + READINESS_SECONDS
    started = {
        "database": _probe_start("database", _database_probe),
        "redis": _probe_start("redis", _redis_probe),
    }
    checks = {name: _probe_result(name, future, until) for name, future in started.items()}
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
