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


def post(path: str, auth: str, address: str = "127.0.0.1", **data: str) -> Any:
    return HttpClient(REMOTE_ADDR=address).post(path, data, headers={"Authorization": auth})


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
    throttled = post("/oauth2/introspect", wrong, token="t")
    assert throttled.status_code == 429, throttled.content
    assert throttled.json()["error"] == "temporarily_unavailable"
    assert int(throttled["Retry-After"]) >= 1
    assert post("/oauth2/revoke", wrong, token="t").status_code == 429
    # the throttle refuses wrong credentials only: the client's own still work
    assert (
        post("/oauth2/introspect", basic(cred.client_id, cred.secret), token="t").status_code == 200
    )
    assert post("/oauth2/revoke", basic(cred.client_id, cred.secret), token="t").status_code == 200


def test_nobody_locks_an_agent_out_with_wrong_secrets(
    cred: Credentialed, org: Organization
) -> None:
    """The client_id is public (the agent's DID document names it): 50 wrong secrets from
    127.0.0.2 throttle 127.0.0.2 and the client_id's wrong guesses, never the right secret."""
    wrong = basic(cred.client_id, "ais_" + "x" * 43)
    answers = [
        post("/oauth2/token", wrong, "127.0.0.2", grant_type="client_credentials").status_code
        for _ in range(50)
    ]
    assert answers[:10] == [401] * 10 and set(answers[10:]) == {429}
    for address in ("127.0.0.1", "127.0.0.2"):
        right = post(
            "/oauth2/token", basic(cred.client_id, cred.secret), address,
            grant_type="client_credentials",
        )  # fmt: skip
        assert right.status_code == 200, (address, right.content)
        assert (
            post(
                "/oauth2/introspect", basic(cred.client_id, cred.secret), address, token="t"
            ).status_code
            == 200
        )
    throttled = post("/oauth2/token", wrong, "127.0.0.2", grant_type="client_credentials")
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) >= 1
    # another client_id's wrong secret from the throttled address: throttled by the address
    stranger = basic("no-such-client", "ais_guess")
    assert (
        post("/oauth2/token", stranger, "127.0.0.2", grant_type="client_credentials").status_code
        == 429
    )
    assert (
        post("/oauth2/token", stranger, "127.0.0.3", grant_type="client_credentials").status_code
        == 401
    )
    with tenant_context(org.id):
        audited = AuditEvent.objects.filter(
            organization_id=org.id, action="auth.failed", subject_id=cred.client_id
        ).count()
    assert audited == 10  # throttled attempts write nothing


def test_behind_a_trusted_proxy_failures_count_for_the_forwarded_address(
    cred: Credentialed, settings: Any
) -> None:
    settings.TRUSTED_PROXIES = ["10.0.0.5"]
    wrong = basic(cred.client_id, "ais_guess")

    def attempt(peer: str, forwarded: str, auth: str = wrong) -> int:
        client = HttpClient(REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded)
        response = client.post(
            "/oauth2/token", {"grant_type": "client_credentials"}, headers={"Authorization": auth}
        )
        return int(response.status_code)

    # an untrusted peer's X-Forwarded-For is ignored: a fresh spoofed address each time helps
    # nothing, the peer's own address is throttled
    spoofed = [
        attempt("198.51.100.9", f"203.0.113.{n}", basic(f"nobody-{n}", "x")) for n in range(12)
    ]
    assert spoofed[:10] == [401] * 10 and set(spoofed[10:]) == {429}
    # from the trusted proxy: each forwarded client is throttled on its own
    assert [attempt("10.0.0.5", "192.0.2.1") for _ in range(3)] == [401] * 3
    assert attempt("10.0.0.5", "192.0.2.2, 192.0.2.1", basic("nobody", "x")) == 401


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
        "/admin/oidc/accesstoken/",
        {"action": "revoke", "_selected_action": [str(row.pk)], "confirmed": "yes"},
    )
    assert response.status_code == 302, response.content[:500]
    with tenant_context(org.id):
        event = AuditEvent.objects.get(organization_id=org.id, action="token.revoked")
    assert (event.actor_type, event.actor_id, event.subject_id) == (
        "user",
        str(superuser.pk),
        jti,
    )
