"""System checks run at start (``manage.py check``, every management command, and the WSGI
entry point before gunicorn serves): the transport-security configuration."""

from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})
DATABASE_TLS_MODES = frozenset({"require", "verify-ca", "verify-full"})


@register(Tags.security)
def tls_enforced(
    *,
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: object,
) -> list[CheckMessage]:
    """Refuse a production configuration (DEBUG off) that serves plain HTTP, unless it says so
    explicitly; warn about the pieces enforcement relies on."""
    messages: list[CheckMessage] = []
    if not settings.DEBUG and not settings.TLS_ENFORCED and not settings.ALLOW_PLAIN_HTTP:
        messages.append(
            Error(
                "TLS enforcement is off (AGENTIDP_TLS_ENFORCED=0) with DEBUG off.",
                hint="Serve over HTTPS (set AGENTIDP_TRUSTED_PROXIES to the TLS-terminating "
                "proxies), or set AGENTIDP_ALLOW_PLAIN_HTTP=1 to serve plain HTTP on purpose.",
                id="agentidp.E010",
            )
        )
    if settings.TLS_ENFORCED and not settings.SECURE_HSTS_SECONDS:
        messages.append(
            Warning(
                "TLS is enforced but HSTS is off (SECURE_HSTS_SECONDS=0).",
                hint="Set SECURE_HSTS_SECONDS (a year: 31536000).",
                id="agentidp.W011",
            )
        )
    return messages


@register(Tags.security, deploy=True)
def backing_services_tls(
    *,
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: object,
) -> list[CheckMessage]:
    """``manage.py check --deploy``: PostgreSQL and Redis on another host without TLS."""
    urls = {name: str(getattr(settings, name)) for name in ("REDIS_URL", "CELERY_BROKER_URL")}
    return connections_without_tls(settings.DATABASES, urls)


def connections_without_tls(
    databases: Mapping[str, Mapping[str, object]], redis_urls: Mapping[str, str]
) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for alias, database in databases.items():
        host = str(database.get("HOST") or "")
        options = database.get("OPTIONS")
        mode = str(options.get("sslmode", "")) if isinstance(options, Mapping) else ""
        if host not in LOCAL_HOSTS and not host.startswith("/") and mode not in DATABASE_TLS_MODES:
            messages.append(
                Warning(
                    f"Database {alias!r} at {host} is reached without TLS (sslmode={mode!r}).",
                    hint="Add ?sslmode=verify-full (or require) to its URL.",
                    id="agentidp.W012",
                )
            )
    for name, value in redis_urls.items():
        url = urlsplit(value)
        if url.hostname not in LOCAL_HOSTS and url.scheme == "redis":
            messages.append(
                Warning(
                    f"{name} reaches {url.hostname} without TLS.",
                    hint="Use a rediss:// URL (with ?ssl_cert_reqs=required).",
                    id="agentidp.W013",
                )
            )
    return messages
