"""Token status lists (draft-ietf-oauth-status-list) as an offline resource server uses them:
every access token names its list and index; the list's URI answers, without authentication,
a status-list token signed by a key in the JWKS, whose zlib-compressed bit string has the
token's bit set within a second of its revocation, whether the token was revoked itself, with
its delegation tree, or with its agent. Through HTTP and the real database."""

import base64
import json
import time
import zlib
from typing import Any

from django.test import Client as HttpClient
from django.test.utils import override_settings
from jwcrypto import jwk, jws
from rest_framework.test import APIClient

from agentidp.devenv import free_port
from agentidp.usage import redis_client
from oidc.tokens import api_audience
from tests.oidc.conftest import FORM, Credentialed, basic, claims, exchange
from tests.oidc.conftest import agent_token as token_for
from tests.oidc.test_revocation import forget_revocation_list

STATUS_TYPE = "application/statuslist+jwt"


def status_list(uri: str) -> dict[str, Any]:
    """GET the list as a relying party would, verify its signature and type, and return its
    claims."""
    path = uri.split("://", 1)[1].split("/", 1)[1]
    response = HttpClient().get(f"/{path}", HTTP_ACCEPT=STATUS_TYPE)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == STATUS_TYPE
    assert response["Cache-Control"].startswith("public, max-age=")
    keys = jwk.JWKSet.from_json(HttpClient().get("/.well-known/jwks.json").content)
    signed = jws.JWS()
    signed.deserialize(response.content.decode())
    header = signed.jose_header
    assert header["typ"] == "statuslist+jwt"
    signed.verify(keys.get_key(header["kid"]), alg=header["alg"])
    payload: dict[str, Any] = json.loads(signed.payload)
    assert payload["sub"] == uri  # the draft: sub equals the referenced token's uri
    assert payload["ttl"] > 0 and payload["exp"] > payload["iat"]
    return payload


def bit(payload: dict[str, Any], index: int) -> int:
    """The status of ``index``, decoded the way the draft specifies (independently of the
    server's code): base64url, zlib, bit ``index % 8`` of byte ``index // 8``."""
    assert payload["status_list"]["bits"] == 1
    encoded = payload["status_list"]["lst"]
    raw = zlib.decompress(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    return (raw[index // 8] >> (index % 8)) & 1


def status_of(token: str) -> int:
    reference = claims(token)["status"]["status_list"]
    return bit(status_list(reference["uri"]), reference["idx"])


def revoke(agent: Credentialed, token: str) -> int:
    """RFC 7009, as the agent holding the token."""
    response = HttpClient().post(
        "/oauth2/revoke", f"token={token}", FORM,
        HTTP_AUTHORIZATION=basic(agent.client_id, agent.secret),
    )  # fmt: skip
    return response.status_code


def eventually_revoked(token: str) -> None:
    """The list shows the revocation within a second (it is rebuilt at least twice a second)."""
    deadline = time.monotonic() + 1.0
    while status_of(token) != 1:
        assert time.monotonic() < deadline, "the status list did not show the revocation in 1 s"
        time.sleep(0.1)


def test_every_token_names_its_place_in_a_status_list(
    trio: tuple[Credentialed, Credentialed, Credentialed],
) -> None:
    a, b, _ = trio
    lean = token_for(a)  # a plain request: the lean path
    full = HttpClient().post(  # resource= goes down the full path
        "/oauth2/token",
        f"grant_type=client_credentials&scope=agents:read&resource={api_audience()}",
        FORM,
        HTTP_AUTHORIZATION=basic(a.client_id, a.secret),
    )
    assert full.status_code == 200, full.content
    delegated = exchange(b, lean, scope="agents:read")
    assert delegated.status_code == 200, delegated.content
    tokens = [lean, full.json()["access_token"], delegated.json()["access_token"]]
    references = [claims(token)["status"]["status_list"] for token in tokens]
    assert len({(r["uri"], r["idx"]) for r in references}) == 3  # one place each
    for reference, token in zip(references, tokens, strict=True):
        assert isinstance(reference["idx"], int) and reference["idx"] >= 0
        assert reference["uri"].startswith("http") and "/oauth2/status/" in reference["uri"]
        assert status_of(token) == 0


def test_a_revoked_token_shows_in_the_list_within_a_second_and_no_other(
    trio: tuple[Credentialed, Credentialed, Credentialed],
) -> None:
    a, _, _ = trio
    revoked, kept = token_for(a), token_for(a)
    assert status_of(revoked) == 0
    assert revoke(a, revoked) == 200
    eventually_revoked(revoked)
    assert status_of(kept) == 0


def test_revoking_the_root_of_a_delegation_tree_sets_every_bit_below_it(
    trio: tuple[Credentialed, Credentialed, Credentialed],
) -> None:
    a, b, c = trio
    root = token_for(a)
    first = exchange(b, root, scope="agents:read agents:write").json()["access_token"]
    second = exchange(c, first, scope="agents:read").json()["access_token"]
    sibling = token_for(a)  # not in the tree
    assert revoke(a, root) == 200
    for token in (root, first, second):
        eventually_revoked(token)
    assert status_of(sibling) == 0


def test_suspending_an_agent_sets_the_bits_of_its_tokens_and_their_tree(
    trio: tuple[Credentialed, Credentialed, Credentialed],
) -> None:
    a, b, _ = trio
    own = token_for(a)
    derived = exchange(b, own, scope="agents:read").json()["access_token"]
    operator = f"Bearer {token_for(b, 'agents:write')}"  # another agent with agents:write
    response = APIClient().post(
        f"/agents/{a.agent.id}/suspend", {"reason": "incident"}, format="json",
        HTTP_AUTHORIZATION=operator,
    )  # fmt: skip
    assert response.status_code == 200, response.content
    eventually_revoked(own)
    eventually_revoked(derived)


def test_an_unknown_list_is_a_problem_not_a_500(
    trio: tuple[Credentialed, Credentialed, Credentialed],
) -> None:
    token_for(trio[0])
    for path in ("/oauth2/status/99999999", "/oauth2/status/" + "9" * 40):
        response = HttpClient().get(path)
        assert response.status_code == 404
        assert response["Content-Type"] == "application/problem+json"
    assert HttpClient().get("/oauth2/status/-1").status_code == 404
    assert HttpClient().get("/oauth2/status/x").status_code == 404
    assert HttpClient().post("/oauth2/status/0").status_code == 405


def _usable(token: str) -> bool:
    return APIClient().get("/agents", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


def test_a_revoked_tree_stays_revoked_when_redis_forgets_and_nothing_applies_without_redis(
    trio: tuple[Credentialed, Credentialed, Credentialed],
) -> None:
    a, b, c = trio
    root = token_for(a)
    first = exchange(b, root, scope="agents:read agents:write").json()["access_token"]
    second = exchange(c, first, scope="agents:read").json()["access_token"]
    # Redis down: the revocation of the root and of its tree is refused whole, nothing applied
    try:
        with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
            redis_client.cache_clear()
            down = revoke(a, root)
    finally:
        redis_client.cache_clear()
    assert down == 503
    assert all(_usable(t) for t in (root, first, second))
    assert all(status_of(t) == 0 for t in (root, first, second))
    assert revoke(a, root) == 200
    forget_revocation_list()  # Redis restarted empty: the database's record rebuilds it
    assert not any(_usable(t) for t in (root, first, second))
    for token in (root, first, second):
        eventually_revoked(token)
