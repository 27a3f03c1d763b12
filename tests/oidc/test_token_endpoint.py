"""POST /oauth2/token with client_credentials, per RFC 6749, RFC 9068 and RFC 8707."""

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client as HttpClient

from agentidp.tenancy import platform_context, tenant_context
from agents.services import agent_decommission, agent_suspend
from compliance.models import AuditEvent
from credentials.models import ClientSecret
from credentials.services import credential_revoke, credential_rotate
from oidc.models import AccessToken
from oidc.tokens import api_audience
from organizations.models import Organization
from organizations.services import organization_suspend
from tests.factories import TEST_ACTOR, OrganizationFactory
from tests.oidc.conftest import (
    Credentialed,
    basic,
    credentialed,
    jwt_parts,
    request_token,
)


def _error(response: Any, status: int, error: str) -> None:
    assert response.status_code == status, response.content
    assert response.json()["error"] == error
    assert response["Cache-Control"] == "no-store"


def test_basic_auth_issues_an_rfc9068_token(cred: Credentialed, org: Organization) -> None:
    response = request_token(cred, scope="agents:read")
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600
    assert body["scope"] == "agents:read"
    assert "refresh_token" not in body
    header, claims = jwt_parts(body["access_token"])
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256" and header["kid"]
    assert claims["iss"] == "http://localhost:8000"
    assert claims["sub"] == str(cred.agent.id)
    assert claims["aud"] == "http://localhost:8000/api"
    assert claims["client_id"] == cred.client_id
    assert claims["organization_id"] == str(org.id)
    assert claims["exp"] - claims["iat"] == 600 and claims["nbf"] == claims["iat"]
    assert claims["scope"] == "agents:read" and claims["jti"]
    with tenant_context(org.id):
        stored = AccessToken.objects.get(jti=claims["jti"])
        event = AuditEvent.objects.get(organization_id=org.id, action="token.issued")
    assert stored.organization_id == org.id
    assert event.subject_id == claims["jti"] and cred.secret not in str(event.data)


def test_client_secret_post_and_default_scopes(cred: Credentialed) -> None:
    response = HttpClient().post(
        "/oauth2/token",
        {
            "grant_type": "client_credentials",
            "client_id": cred.client_id,
            "client_secret": cred.secret,
        },
    )
    assert response.status_code == 200, response.content
    assert set(response.json()["scope"].split()) == {"agents:read", "agents:write"}


def test_bad_secret_is_invalid_client_and_audited(cred: Credentialed, org: Organization) -> None:
    response = request_token(auth=basic(cred.client_id, "ais_wrong"))
    _error(response, 401, "invalid_client")
    assert response["WWW-Authenticate"].startswith("Basic")
    with tenant_context(org.id):
        failure = AuditEvent.objects.get(organization_id=org.id, action="auth.failed")
    assert failure.outcome == "failure" and failure.data == {"reason": "bad_secret"}
    assert "ais_wrong" not in str(failure.data)


@pytest.mark.parametrize(
    "auth",
    [basic("00000000-0000-0000-0000-000000000000", "x"), "Basic !!!notbase64", "Bearer abc", None],
)
def test_unknown_or_malformed_client_is_401(auth: str | None) -> None:
    _error(request_token(auth=auth), 401, "invalid_client")


@pytest.mark.parametrize("grant_type", ["password", "authorization_code", "urn:made:up"])
def test_unsupported_grant_type(cred: Credentialed, grant_type: str) -> None:
    _error(request_token(cred, grant_type=grant_type), 400, "unsupported_grant_type")


def test_scope_outside_the_agents_allowance(cred: Credentialed) -> None:
    _error(request_token(cred, scope="audit:read"), 400, "invalid_scope")
    _error(request_token(cred, scope="agents:read made:up"), 400, "invalid_scope")


def test_resource_and_audience_name_only_the_platform_api_or_a_registered_resource(
    cred: Credentialed,
) -> None:
    token = request_token(cred, resource=api_audience()).json()["access_token"]
    assert jwt_parts(token)[1]["aud"] == api_audience()
    token = request_token(cred, audience=api_audience()).json()["access_token"]
    assert jwt_parts(token)[1]["aud"] == api_audience()
    _error(request_token(cred, resource="https://svc.example/api"), 400, "invalid_target")
    _error(request_token(cred, audience="https://other.example"), 400, "invalid_target")
    _error(request_token(cred, resource="not-a-uri"), 400, "invalid_target")


def test_organization_lifetime_is_capped(org: Organization, settings: Any) -> None:
    settings.AGENTIDP = {**settings.AGENTIDP, "ACCESS_TOKEN_MAX_LIFETIME": 120}
    cred = credentialed(org)
    assert request_token(cred).json()["expires_in"] == 120


def test_suspended_agent_or_organization_cannot_authenticate(org: Organization) -> None:
    cred = credentialed(org)
    with tenant_context(org.id):
        agent_suspend(actor=TEST_ACTOR, organization_id=org.id, agent_id=cred.agent.id)
    _error(request_token(cred), 401, "invalid_client")
    other = OrganizationFactory()
    cred2 = credentialed(other)
    with platform_context(reason="tests"):
        organization_suspend(actor=TEST_ACTOR, organization_id=other.id)
    _error(request_token(cred2), 401, "invalid_client")


def test_decommissioning_revokes_every_secret(cred: Credentialed, org: Organization) -> None:
    with tenant_context(org.id):
        agent_decommission(actor=TEST_ACTOR, organization_id=org.id, agent_id=cred.agent.id)
        assert not ClientSecret.objects.filter(
            organization_id=org.id, client__agent_id=cred.agent.id, revoked_at__isnull=True
        ).exists()
    _error(request_token(cred), 401, "invalid_client")


def test_rotation_overlaps_then_old_secret_stops(cred: Credentialed, org: Organization) -> None:
    with tenant_context(org.id):
        new = credential_rotate(
            actor=TEST_ACTOR, organization_id=org.id, agent_id=cred.agent.id,
            credential_id=cred.credential_id, grace_seconds=3600,
        )  # fmt: skip
    assert request_token(cred).status_code == 200  # old secret, within its grace period
    assert request_token(auth=basic(cred.client_id, new.secret)).status_code == 200
    with tenant_context(org.id):
        newest = credential_rotate(
            actor=TEST_ACTOR, organization_id=org.id, agent_id=cred.agent.id,
            credential_id=new.credential.id, grace_seconds=0,
        )  # fmt: skip
    _error(request_token(auth=basic(cred.client_id, new.secret)), 401, "invalid_client")
    assert request_token(auth=basic(cred.client_id, newest.secret)).status_code == 200
    with tenant_context(org.id):
        credential_revoke(
            actor=TEST_ACTOR, organization_id=org.id, agent_id=cred.agent.id,
            credential_id=newest.credential.id,
        )  # fmt: skip
    _error(request_token(auth=basic(cred.client_id, newest.secret)), 401, "invalid_client")


def test_rate_limit_answers_429_with_retry_after() -> None:
    """The free plan's client bucket holds 10 and refills 5 per second: a burst passes, then
    requests faster than the refill are refused (however slow this machine is, requests keep
    coming until one is)."""
    free = OrganizationFactory(plan="free")
    cred = credentialed(free)
    statuses = [request_token(cred).status_code for _ in range(10)]
    assert statuses == [200] * 10
    for _ in range(200):
        limited = request_token(cred)
        if limited.status_code != 200:
            break
    _error(limited, 429, "temporarily_unavailable")
    assert int(limited["Retry-After"]) >= 1


def test_monthly_quota_answers_429(django_capture_on_commit_callbacks: Any) -> None:
    small = OrganizationFactory(max_tokens_per_month=2)
    cred = credentialed(small)
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            assert request_token(cred).status_code == 200
    response = request_token(cred)
    _error(response, 429, "temporarily_unavailable")
    assert "quota" in response.json()["error_description"]


def test_repeated_failures_throttle_the_client_ids_wrong_guesses_only(cred: Credentialed) -> None:
    for _ in range(10):
        assert request_token(auth=basic(cred.client_id, "ais_guess")).status_code == 401
    _error(request_token(auth=basic(cred.client_id, "ais_guess")), 429, "temporarily_unavailable")
    assert request_token(cred).status_code == 200


def test_metrics_count_issuance_failures_and_limits(
    cred: Credentialed, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        assert request_token(cred).status_code == 200
    request_token(auth=basic(cred.client_id, "ais_wrong"))
    body = HttpClient().get("/metrics").content.decode()
    for series in [
        "agentidp_tokens_issued_total",
        'agentidp_auth_failures_total{reason="bad_secret"}',
        "agentidp_rate_limited_total",
        'agentidp_token_endpoint_seconds_bucket{le="0.05",status="200"}',
    ]:
        assert series in body, series
    assert str(cred.agent.organization_id) not in body  # no unbounded organization labels


def test_only_the_tokens_checksum_is_stored(cred: Credentialed, org: Organization) -> None:
    """RFC 9700: a bearer token at rest is a credential, so the row keeps its SHA-256 only."""
    token = request_token(cred).json()["access_token"]
    jti = jwt_parts(token)[1]["jti"]
    with tenant_context(org.id):
        stored = AccessToken.objects.get(jti=jti)
        event = AuditEvent.objects.get(organization_id=org.id, subject_id=jti)
    assert stored.token == ""
    assert stored.token_checksum == hashlib.sha256(token.encode()).hexdigest()
    assert stored.application_id is not None and stored.scope == "agents:read agents:write"
    assert event.action == "token.issued" and event.sequence >= 1


def test_a_request_that_fails_after_admission_uses_no_quota() -> None:
    small = OrganizationFactory(max_tokens_per_month=1)
    cred = credentialed(small, scopes=["agents:read"])
    _error(request_token(cred, scope="audit:read"), 400, "invalid_scope")
    _error(request_token(cred, resource="not-a-uri"), 400, "invalid_target")
    assert request_token(cred).status_code == 200
    _error(request_token(cred), 429, "temporarily_unavailable")


def test_concurrent_requests_cannot_overshoot_the_quota(
    run_in_threads: Callable[..., list[Any]],
) -> None:
    """Admission reserves the token in the same Redis call that checks the quota, so eight
    simultaneous requests against a quota of three get exactly three tokens."""
    (cred,) = run_in_threads(lambda: credentialed(OrganizationFactory(max_tokens_per_month=3)))
    statuses = run_in_threads(*[lambda: request_token(cred).status_code for _ in range(8)])
    assert sorted(statuses) == [200] * 3 + [429] * 5, statuses


def test_without_redis_no_token_is_issued_unmetered(cred: Credentialed, settings: Any) -> None:
    """Limits and quotas live in Redis: when it is unreachable the endpoint refuses with 503
    and an OAuth error body (never a 500, never a token), and still refuses bad clients."""
    import oidc.ratelimit
    from agentidp.devenv import free_port
    from agentidp.usage import redis_client

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    redis_client.cache_clear()
    oidc.ratelimit._scripts.clear()
    try:
        response = request_token(cred)
        _error(response, 503, "temporarily_unavailable")
        assert int(response["Retry-After"]) >= 1 and "access_token" not in response.json()
        _error(request_token(auth=basic("no-such-client", "x")), 401, "invalid_client")
        with tenant_context(cred.agent.organization_id):
            assert not AccessToken.objects.filter(application__agent=cred.agent).exists()
    finally:
        redis_client.cache_clear()
        oidc.ratelimit._scripts.clear()
