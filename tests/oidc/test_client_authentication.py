"""One client authentication for the token, revocation and introspection endpoints: throttled,
failures counted and audited everywhere; only token requests are metered against the limits
and the monthly quota."""

from collections.abc import Callable
from typing import Any, cast

from django.contrib.auth.models import User
from django.test import Client as HttpClient

from agentidp.tenancy import tenant_context
from agentidp.usage import redis_client, usage_key
from compliance.models import AuditEvent
from oidc.models import AccessToken
from organizations.models import Organization
from tests.oidc.conftest import Credentialed, basic, jwt_parts
from tests.platform.test_admin import PASSWORD


def post(path: str, auth: str, **data: str) -> Any:
    return HttpClient().post(path, data, headers={"Authorization": auth})


def used(org: Organization) -> int:
    value = cast(bytes | None, redis_client().get(usage_key(org.id)))
    return int(value or 0)


def test_revocation_and_introspection_use_no_quota(
    cred: Credentialed, org: Organization, token_for: Callable[..., str]
) -> None:
    token = token_for(cred)
    before = used(org)
    auth = basic(cred.client_id, cred.secret)
    for _ in range(3):
        assert post("/oauth2/introspect", auth, token=token).status_code == 200
        assert post("/oauth2/revoke", auth, token="not-a-token").status_code == 200
    assert used(org) == before
    token_for(cred)
    assert used(org) == before + 1


def test_introspection_failures_are_counted_audited_and_throttled(
    cred: Credentialed, org: Organization
) -> None:
    wrong = basic(cred.client_id, "ais_guess")
    for _ in range(10):
        response = post("/oauth2/introspect", wrong, token="t")
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Basic")
        assert response.json()["error"] == "invalid_client"
    with tenant_context(org.id):
        failures = AuditEvent.objects.filter(
            organization_id=org.id, action="auth.failed", subject_id=cred.client_id
        ).count()
    assert failures == 10
    throttled = post("/oauth2/introspect", basic(cred.client_id, cred.secret), token="t")
    assert throttled.status_code == 429, throttled.content
    assert throttled.json()["error"] == "temporarily_unavailable"
    assert int(throttled["Retry-After"]) >= 1
    assert post("/oauth2/revoke", basic(cred.client_id, cred.secret), token="t").status_code == 429


def test_a_staff_revocation_is_audited_as_the_staff_members_act(
    cred: Credentialed, org: Organization, superuser: User, token_for: Callable[..., str]
) -> None:
    token = token_for(cred)
    jti = jwt_parts(token)[1]["jti"]
    with tenant_context(org.id):
        row = AccessToken.objects.get(organization_id=org.id, jti=jti)
    client = HttpClient()
    assert client.login(username=superuser.username, password=PASSWORD)
    response = client.post(
        "/admin/oidc/accesstoken/", {"action": "revoke", "_selected_action": [str(row.pk)]}
    )
    assert response.status_code == 302, response.content[:500]
    with tenant_context(org.id):
        event = AuditEvent.objects.get(organization_id=org.id, action="token.revoked")
    assert (event.actor_type, event.actor_id, event.subject_id) == (
        "user",
        str(superuser.pk),
        jti,
    )
