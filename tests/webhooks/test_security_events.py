"""Revocations for Shared Signals receivers: a ``set`` subscription gets, for each revocation,
a Security Event Token (RFC 8417) signed by a key in the JWKS, pushed as
``application/secevent+jwt`` (RFC 8935) with the Standard Webhooks signature too, carrying a
CAEP session-revoked event that names the tree's root and how many tokens went with it. Other
events are not sent to it. Through the live relay, a live receiver and the real database."""

import json
from datetime import UTC, datetime
from typing import Any

from django.test import Client as HttpClient
from jwcrypto import jwk, jws
from rest_framework.test import APIClient
from standardwebhooks import Webhook

from organizations.models import Organization
from tests.oidc.conftest import FORM, basic, claims, credentialed, exchange
from tests.oidc.conftest import agent_token as token_for
from tests.webhooks.conftest import Receiver, subscribe
from webhooks.delivery import deliveries_send
from webhooks.relay import relay_run

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"


def verified_set(body: bytes, audience: str) -> dict[str, Any]:
    """Verify the SET as a receiver would: signature against the JWKS, typ, audience."""
    keys = jwk.JWKSet.from_json(HttpClient().get("/.well-known/jwks.json").content)
    token = jws.JWS()
    token.deserialize(body.decode())
    header = token.jose_header
    assert header["typ"] == "secevent+jwt"
    token.verify(keys.get_key(header["kid"]), alg=header["alg"])
    payload: dict[str, Any] = json.loads(token.payload)
    assert payload["aud"] == audience and payload["iss"].startswith("http")
    assert set(payload["events"]) == {SESSION_REVOKED}
    return payload


def test_a_revoked_delegation_tree_reaches_a_shared_signals_receiver_as_one_set(
    org: Organization, receiver: Receiver
) -> None:
    a, b, c = (credentialed(org, ["agents:read", "agents:write"]) for _ in range(3))
    subscribe(org, receiver, ["token.revoked", "token.issued", "agent.*"], format="set")
    root = token_for(a)
    first = exchange(b, root, scope="agents:read agents:write").json()["access_token"]
    exchange(c, first, scope="agents:read")
    revoked = HttpClient().post(
        "/oauth2/revoke", f"token={root}", FORM, HTTP_AUTHORIZATION=basic(a.client_id, a.secret)
    )
    assert revoked.status_code == 200
    relay_run(organization_id=org.id)
    deliveries_send(organization_id=org.id)
    # token.issued and agent.created were subscribed to, but only the revocation is a SET
    assert len(receiver.received) == 1
    got = receiver.received[0]
    assert got.headers["content-type"] == "application/secevent+jwt"
    # the Standard Webhooks signature as well (its library parses JSON bodies only, so the
    # signature is recomputed over the SET as that library would)
    sent_at = datetime.fromtimestamp(int(got.headers["webhook-timestamp"]), tz=UTC)
    expected = Webhook(receiver.secrets[0]).sign(got.headers["webhook-id"], sent_at,
                                                 got.body.decode())  # fmt: skip
    assert expected in got.headers["webhook-signature"].split(" ")
    payload = verified_set(got.body, receiver.url)
    assert payload["sub_id"] == {"format": "opaque", "id": claims(root)["jti"]}
    assert payload["jti"] == got.headers["webhook-id"]  # the audit event's id
    event = payload["events"][SESSION_REVOKED]
    assert event["revoked"] == 3  # the root and the two tokens exchanged from it
    assert event["root"] == {"type": "token", "format": "opaque", "id": claims(root)["jti"]}
    assert event["initiating_entity"] == "user" and event["agentidp_event"] == "token.revoked"


def test_a_suspension_and_the_kill_switch_are_sets_with_their_reason(
    org: Organization, receiver: Receiver, api: APIClient
) -> None:
    target = credentialed(org, ["agents:read"])
    subscribe(org, receiver, ["agent.*", "agents.*"], format="set")
    assert api.post(f"/agents/{target.agent.id}/suspend", {"reason": "leaked secret"},
                    format="json").status_code == 200  # fmt: skip
    assert api.post("/agents/kill-switch", {"reason": "incident 42"}, format="json").json() == {
        "suspended": 0
    }
    relay_run(organization_id=org.id)
    deliveries_send(organization_id=org.id)
    payloads = {  # sent concurrently: in any order
        p["events"][SESSION_REVOKED]["agentidp_event"]: p
        for p in (verified_set(r.body, receiver.url) for r in receiver.received)
    }
    assert set(payloads) == {"agent.suspended", "agents.kill_switch"}
    assert payloads["agent.suspended"]["sub_id"]["id"] == str(target.agent.id)
    assert payloads["agents.kill_switch"]["sub_id"]["id"] == str(org.id)
    suspended = payloads["agent.suspended"]["events"][SESSION_REVOKED]
    switched = payloads["agents.kill_switch"]["events"][SESSION_REVOKED]
    assert suspended["reason_admin"] == {"en": "leaked secret"}
    assert suspended["initiating_entity"] == "admin"  # a person, in the admin's words
    assert switched["reason_admin"] == {"en": "incident 42"}


def test_the_format_is_part_of_the_subscription_api(api: APIClient, receiver: Receiver) -> None:
    created = api.post("/webhooks", {"url": receiver.url, "event_types": ["token.revoked"],
                                     "format": "set"}, format="json")  # fmt: skip
    assert created.status_code == 201, created.content
    subscription = created.json()["subscription"]
    assert subscription["format"] == "set"
    changed = api.patch(f"/webhooks/{subscription['id']}", {"format": "standard"}, format="json")
    assert changed.status_code == 200 and changed.json()["format"] == "standard"
    for bad in ("SET", "", None, 1, "jwt"):
        refused = api.patch(f"/webhooks/{subscription['id']}", {"format": bad}, format="json")
        assert refused.status_code == 400, bad
        assert "format" in refused.json()["errors"]
