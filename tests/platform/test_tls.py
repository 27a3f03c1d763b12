"""TLS enforcement: Django's SecurityMiddleware first in the stack; plain-HTTP writes and OAuth
calls refused (never redirected), reads redirected, HSTS on HTTPS, X-Forwarded-Proto believed
only from configured proxies, and a start-up check that refuses plain HTTP in production."""

import os
import subprocess
import sys
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings as django_settings
from django.test import Client as HttpClient

from agentidp.checks import backing_services_tls, connections_without_tls, tls_enforced
from agentidp.devenv import ROOT
from agentidp.tenancy import tenant_context
from compliance.models import AuditEvent
from tests.oidc.conftest import FORM, Credentialed, basic

PROXY = "10.0.0.7"


@pytest.fixture
def enforced(settings: Any) -> None:
    settings.TLS_ENFORCED = True
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_SSL_HOST = "idp.example"  # from an https AGENTIDP_ISSUER
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.TRUSTED_PROXIES = [PROXY]


def _token(cred: Credentialed, **extra: Any) -> Any:
    body = urlencode({"grant_type": "client_credentials"})
    headers = {"Authorization": basic(cred.client_id, cred.secret)}
    return HttpClient().post("/oauth2/token", body, FORM, headers=headers, **extra)


def test_is_first_of_the_middleware_that_answer() -> None:
    stack = django_settings.MIDDLEWARE
    assert stack.index("agentidp.middleware.TransportSecurityMiddleware") == 1
    assert stack[0] == "django_prometheus.middleware.PrometheusBeforeMiddleware"  # only times


def test_a_plain_http_token_request_is_refused_not_redirected(
    enforced: None, cred: Credentialed
) -> None:
    response = _token(cred)
    assert response.status_code == 403 and "Location" not in response
    assert response.json()["error"] == "invalid_request"
    assert "HTTPS" in response.json()["error_description"]
    with tenant_context(cred.agent.organization_id):
        assert not AuditEvent.objects.filter(action="token.issued").exists()  # never served


def test_plain_http_api_writes_are_refused_and_reads_redirected(enforced: None, api: Any) -> None:
    write = api.post("/agents", {"name": "x"}, format="json")
    assert write.status_code == 403 and write["Content-Type"] == "application/problem+json"
    assert write.json()["type"] == "urn:agentidp:problem:https_required"
    read = api.get("/agents?limit=1")
    assert read.status_code == 301 and read["Location"] == "https://idp.example/agents?limit=1"
    assert HttpClient().get("/healthz").status_code == 200  # probes stay plain inside


def test_with_no_https_address_a_read_is_told_what_to_do(enforced: None, settings: Any) -> None:
    """The issuer is http (no https origin to redirect to): a browser at /admin is not sent to
    https on this very port, where nothing answers, but told how to reach the deployment."""
    settings.SECURE_SSL_HOST = None
    page = HttpClient().get("/admin", headers={"Accept": "text/html"})
    assert page.status_code == 403 and "Location" not in page
    assert b"AGENTIDP_TRUSTED_PROXIES" in page.content and b"AGENTIDP_ISSUER" in page.content
    api = HttpClient().get("/agents")
    assert api.status_code == 403 and api["Content-Type"] == "application/problem+json"
    assert api.json()["type"] == "urn:agentidp:problem:https_required"
    assert HttpClient().get("/healthz").status_code == 200


def test_https_is_served_with_hsts(enforced: None, cred: Credentialed) -> None:
    response = _token(cred, secure=True)
    assert response.status_code == 200, response.content
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_x_forwarded_proto_counts_only_from_a_trusted_proxy(
    enforced: None, cred: Credentialed
) -> None:
    forged = _token(cred, HTTP_X_FORWARDED_PROTO="https")  # from 127.0.0.1, not a proxy
    assert forged.status_code == 403
    proxied = _token(cred, HTTP_X_FORWARDED_PROTO="https", REMOTE_ADDR=PROXY)
    assert proxied.status_code == 200 and "Strict-Transport-Security" in proxied


def test_passthrough_in_development(settings: Any, cred: Credentialed) -> None:
    settings.SECURE_SSL_REDIRECT = False
    assert _token(cred).status_code == 200


def test_the_start_check_refuses_plain_http_in_production(settings: Any) -> None:
    settings.DEBUG, settings.TLS_ENFORCED, settings.ALLOW_PLAIN_HTTP = False, False, False
    assert [m.id for m in tls_enforced()] == ["agentidp.E010"]
    settings.ALLOW_PLAIN_HTTP = True
    assert tls_enforced() == []
    settings.DEBUG, settings.ALLOW_PLAIN_HTTP = True, False
    assert tls_enforced() == []
    settings.DEBUG, settings.TLS_ENFORCED, settings.SECURE_HSTS_SECONDS = False, True, 0
    assert [m.id for m in tls_enforced()] == ["agentidp.W011"]


def test_gunicorn_entry_point_and_manage_refuse_to_start() -> None:
    env = {
        **os.environ,
        "DEBUG": "0",
        "AGENTIDP_TLS_ENFORCED": "0",
        "AGENTIDP_ALLOW_PLAIN_HTTP": "0",
        "AGENTIDP_ALLOW_LOCAL_SECRETS": "1",
        "SECRET_KEY": "x" * 50,
    }
    wsgi = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-c", "import agentidp.wsgi"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert wsgi.returncode != 0 and "agentidp.E010" in wsgi.stderr
    check = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "check"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert check.returncode != 0 and "agentidp.E010" in check.stderr


def test_deploy_check_names_backing_services_without_tls() -> None:
    databases = {
        "default": {"HOST": "db.internal", "OPTIONS": {}},
        "owner": {"HOST": "db.internal", "OPTIONS": {"sslmode": "verify-full"}},
        "local": {"HOST": "127.0.0.1", "OPTIONS": {}},
    }
    urls = {
        "REDIS_URL": "redis://cache.internal:6379/0",
        "CELERY_BROKER_URL": "rediss://cache.internal:6380/0?ssl_cert_reqs=required",
    }
    found = connections_without_tls(databases, urls)
    assert [(m.id, m.msg.split()[1]) for m in found] == [
        ("agentidp.W012", "'default'"),
        ("agentidp.W013", "reaches"),
    ]
    assert backing_services_tls() == []  # this suite's own services are on loopback
