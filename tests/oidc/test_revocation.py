"""Revocation is durable and one rule decides it: the API, introspection and the revocation
list agree for revoked tokens, revoked secrets and suspended agents, whatever Redis forgets."""

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client as HttpClient
from django.test.utils import override_settings

from agentidp.devenv import free_port
from agentidp.tenancy import platform_context, tenant_context
from agentidp.usage import redis_client
from agents.services import agent_decommission, agent_reactivate, agent_suspend
from credentials.services import credential_generate, credential_revoke, credential_rotate
from oidc.choices import RevocationReason
from oidc.models import AccessToken, RevokedToken
from oidc.revocation import LOADED, PREFIX, jti_is_revoked
from organizations.models import Organization
from tests.factories import TEST_ACTOR
from tests.oidc.conftest import Credentialed, basic, credentialed, jwt_parts


def api(token: str) -> int:
    response = HttpClient().get("/agents", headers={"Authorization": f"Bearer {token}"})
    return int(response.status_code)


def introspect(caller: Credentialed, token: str) -> dict[str, Any]:
    response = HttpClient().post(
        "/oauth2/introspect",
        {"token": token},
        headers={"Authorization": basic(caller.client_id, caller.secret)},
    )
    assert response.status_code == 200, response.content
    body: dict[str, Any] = response.json()
    return body


def revoke(caller: Credentialed, token: str) -> Any:
    return HttpClient().post(
        "/oauth2/revoke",
        {"token": token},
        headers={"Authorization": basic(caller.client_id, caller.secret)},
    )


def forget_revocation_list() -> None:
    """What a Redis restart without its data, or a FLUSHDB, leaves behind."""
    client = redis_client()
    keys = list(client.scan_iter(match=PREFIX + "*", count=1000))
    client.delete(LOADED, *keys)


def jti_of(token: str) -> str:
    return str(jwt_parts(token)[1]["jti"])


def record_of(token: str) -> RevokedToken | None:
    """The durable revocation record, read across organizations as the tests' platform path."""
    with platform_context(reason="tests"):
        return RevokedToken.objects.filter(jti=uuid.UUID(jti_of(token))).first()


def reason_of(token: str) -> str:
    record = record_of(token)
    assert record is not None
    return str(record.reason)


def listed(token: str) -> bool:
    return bool(redis_client().exists(PREFIX + jti_of(token)))


@pytest.fixture
def other(org: Organization) -> Credentialed:
    """A second agent of the same organization (introspects the first one's tokens)."""
    return credentialed(org, name="introspector")


def assert_agree(token: str, caller: Credentialed, *, usable: bool) -> None:
    assert (api(token) == 200) is usable
    assert introspect(caller, token)["active"] is usable
    assert jti_is_revoked(jti_of(token)) is (not usable)


def test_a_revoked_token_stays_revoked_when_redis_forgets(
    cred: Credentialed, other: Credentialed, token_for: Callable[..., str]
) -> None:
    token = token_for(cred)
    response = revoke(cred, token)
    assert response.status_code == 200 and response.json() == {}
    assert response["Content-Type"] == "application/json"
    assert reason_of(token) == RevocationReason.CLIENT_REQUEST
    with platform_context(reason="tests"):
        assert AccessToken.objects.filter(jti=jti_of(token)).exists(), "the token's row stays"
    assert api(token) == 401

    forget_revocation_list()
    assert not listed(token)
    assert api(token) == 401, "rebuilt from the database on the miss"
    assert listed(token) and redis_client().exists(LOADED)
    forget_revocation_list()
    assert introspect(other, token) == {"active": False}


def test_a_revocation_needs_the_list_and_applies_nothing_without_it(
    cred: Credentialed, token_for: Callable[..., str]
) -> None:
    token = token_for(cred)
    try:
        with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
            redis_client.cache_clear()
            response = revoke(cred, token)
    finally:
        redis_client.cache_clear()
    assert response.status_code == 503, response.content
    assert response.json()["error"] == "temporarily_unavailable"
    assert int(response["Retry-After"]) >= 1
    assert record_of(token) is None
    assert api(token) == 200


def test_introspection_answers_503_without_the_revocation_list(
    cred: Credentialed, other: Credentialed, token_for: Callable[..., str]
) -> None:
    token = token_for(cred)
    try:
        with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
            redis_client.cache_clear()
            response = HttpClient().post(
                "/oauth2/introspect",
                {"token": token},
                headers={"Authorization": basic(other.client_id, other.secret)},
            )
    finally:
        redis_client.cache_clear()
    assert response.status_code == 503, response.content
    assert response.json() == {
        "error": "temporarily_unavailable",
        "error_description": response.json()["error_description"],
    }
    assert int(response["Retry-After"]) >= 1
    assert response["Cache-Control"] == "no-store"


def test_suspension_ends_tokens_for_good_in_api_introspection_and_list(
    cred: Credentialed,
    other: Credentialed,
    org: Organization,
    token_for: Callable[..., str],
    django_capture_on_commit_callbacks: Any,
) -> None:
    token = token_for(cred)
    assert_agree(token, other, usable=True)
    with django_capture_on_commit_callbacks(execute=True), tenant_context(org.id):
        agent_suspend(actor=TEST_ACTOR, organization_id=org.id, agent_id=cred.agent.id)
    assert api(token) == 401 and introspect(other, token) == {"active": False}
    assert listed(token)
    assert reason_of(token) == "agent_suspended"

    with tenant_context(org.id):
        agent_reactivate(actor=TEST_ACTOR, organization_id=org.id, agent_id=cred.agent.id)
    forget_revocation_list()
    assert api(token) == 401 and introspect(other, token) == {"active": False}
    time.sleep(1.01)
    fresh = token_for(cred)
    assert api(fresh) == 200 and introspect(other, fresh)["active"] is True


def test_a_token_issued_in_a_suspension_race_is_still_refused(
    cred: Credentialed, other: Credentialed, org: Organization, token_for: Callable[..., str]
) -> None:
    """A token the revocation list never heard of (issued as the suspension committed) is
    refused by the agent's not-before, in the API and introspection alike."""
    token = token_for(cred)
    with tenant_context(org.id):
        agent_suspend(actor=TEST_ACTOR, organization_id=org.id, agent_id=cred.agent.id)
        RevokedToken.objects.filter(organization_id=org.id).delete()
        agent_reactivate(actor=TEST_ACTOR, organization_id=org.id, agent_id=cred.agent.id)
    forget_revocation_list()
    assert api(token) == 401
    assert introspect(other, token) == {"active": False}


def test_decommissioning_revokes_live_tokens(
    cred: Credentialed, other: Credentialed, org: Organization, token_for: Callable[..., str]
) -> None:
    token = token_for(cred)
    with tenant_context(org.id):
        agent_decommission(actor=TEST_ACTOR, organization_id=org.id, agent_id=cred.agent.id)
    forget_revocation_list()
    assert api(token) == 401 and introspect(other, token) == {"active": False}
    assert reason_of(token) == "agent_decommissioned"


def test_revoking_a_secret_revokes_the_tokens_it_issued_only(
    cred: Credentialed, other: Credentialed, org: Organization, token_for: Callable[..., str]
) -> None:
    with tenant_context(org.id):
        second = credential_generate(
            actor=TEST_ACTOR, organization_id=org.id, agent_id=cred.agent.id
        )
    from_first = token_for(cred)
    from_second = token_for(
        Credentialed(cred.agent, cred.client_id, second.secret, second.credential.id)
    )
    with tenant_context(org.id):
        credential_revoke(
            actor=TEST_ACTOR,
            organization_id=org.id,
            agent_id=cred.agent.id,
            credential_id=cred.credential_id,
        )
    forget_revocation_list()
    assert api(from_first) == 401 and introspect(other, from_first) == {"active": False}
    assert reason_of(from_first) == "credential_revoked"
    assert api(from_second) == 200 and introspect(other, from_second)["active"] is True


def test_rotation_keeps_the_old_secrets_tokens(
    cred: Credentialed, other: Credentialed, org: Organization, token_for: Callable[..., str]
) -> None:
    token = token_for(cred)
    with tenant_context(org.id):
        credential_rotate(
            actor=TEST_ACTOR,
            organization_id=org.id,
            agent_id=cred.agent.id,
            credential_id=cred.credential_id,
            grace_seconds=0,
        )
    assert api(token) == 200 and introspect(other, token)["active"] is True


@pytest.fixture
def _clean_list() -> Iterator[None]:
    yield
    forget_revocation_list()


def test_rebuild_lists_every_organizations_live_revocations(
    cred: Credentialed, token_for: Callable[..., str], other_org: Organization, _clean_list: None
) -> None:
    foreign = credentialed(other_org)
    tokens = [token_for(cred), token_for(foreign)]
    assert revoke(cred, tokens[0]).status_code == 200
    assert revoke(foreign, tokens[1]).status_code == 200
    forget_revocation_list()
    assert jti_is_revoked(str(uuid.uuid4())) is False
    assert all(listed(token) for token in tokens)


def test_purge_forgets_only_expired_revocations(
    cred: Credentialed, org: Organization, token_for: Callable[..., str]
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from oidc.tasks import revocations_purge_task

    live = token_for(cred)
    assert revoke(cred, live).status_code == 200
    with tenant_context(org.id):
        RevokedToken.objects.create(
            organization_id=org.id,
            jti=uuid.uuid4(),
            expires_at=timezone.now() - timedelta(seconds=1),
            revoked_at=timezone.now() - timedelta(hours=1),
            reason=RevocationReason.CLIENT_REQUEST,
        )
    assert revocations_purge_task(str(org.id)) == 1
    assert record_of(live) is not None


def test_revoking_a_secret_needs_the_list_and_applies_nothing_without_it(
    cred: Credentialed, org: Organization, token_for: Callable[..., str]
) -> None:
    """A secret's tokens are listed before the change commits: with Redis down the
    revocation fails whole, rather than leaving the list behind the database."""
    import redis
    from django.db import transaction

    from credentials.models import ClientSecret

    token = token_for(cred)
    try:
        with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
            redis_client.cache_clear()
            with pytest.raises(redis.ConnectionError), transaction.atomic():
                with tenant_context(org.id):
                    credential_revoke(
                        actor=TEST_ACTOR,
                        organization_id=org.id,
                        agent_id=cred.agent.id,
                        credential_id=cred.credential_id,
                    )
    finally:
        redis_client.cache_clear()
    with tenant_context(org.id):
        secret = ClientSecret.objects.get(organization_id=org.id, id=cred.credential_id)
    assert secret.revoked_at is None and record_of(token) is None
    assert api(token) == 200
