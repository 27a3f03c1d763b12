"""Health endpoints for load balancers and Django's error handlers."""

import logging

import redis
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse

from agentidp.errors import problem_response

logger = logging.getLogger("agentidp.health")


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive."""
    return JsonResponse({"status": "ok"})


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


def not_found(request: HttpRequest, exception: Exception) -> JsonResponse:
    return problem_response(request, status=404, title="Not found", detail="No such resource.")


def server_error(request: HttpRequest) -> JsonResponse:
    return problem_response(
        request, status=500, title="Internal server error", detail="An unexpected error occurred."
    )
