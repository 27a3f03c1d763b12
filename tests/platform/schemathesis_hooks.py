"""Schemathesis hooks (``SCHEMATHESIS_HOOKS``) for the rules an OpenAPI schema cannot state, so
that every schema-valid request the fuzzer calls valid really is, and positive-data acceptance
can run with every other check. Each rule is also written in the operation's description; the
server refuses what breaks it with a documented 400. Only generated *positive* cases are
filtered or completed: negative ones go through untouched.

* between fields: ``first <= second`` (consistency proofs), ``from <= to`` (verification),
  ``since`` before ``until`` and at most 400 days before it (the report);
* against the clock: a secret's or a partner's ``expires_at`` is in the future;
* against Unicode: a name (an agent's, an organization's) is in one script and holds no
  control, invisible, private-use or unassigned character (Unicode TS #39; the rule is
  ``agentidp.names``, applied here as the server applies it);
* against the server's memory: a ``cursor`` is one the API returned;
* against the request: ``/agent-info`` takes its token one way (the run already sends it in
  the header);
* against the world: a webhook URL must be reachable under the deployment's SSRF rules (a
  receiver address on this machine is substituted), a partner issuer must answer with its
  metadata and keys (the fuzzed deployment itself is substituted: ``AGENTIDP_FUZZ_BASE``), a
  P-256 key must be a point on the curve (a fixed valid one is substituted, an agent's
  private_key_jwt key too), skill ids repeat at most once; a resource's identifier is a fresh
  https URI, its scopes valid scope tokens, and a grant names none of them (its scopes are
  the resource's).
"""

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis

from agentidp.names import name_acceptable

BASE = os.environ.get("AGENTIDP_FUZZ_BASE", "")
RECEIVER = os.environ.get("AGENTIDP_FUZZ_RECEIVER", "http://127.0.0.1:65000/hook")
REPORT_MAX_DAYS = 400
# a P-256 public key (x, y on the curve): random coordinates are not
P256 = {
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}
ED25519_X = "meNcfvpu4e6czbFZfl1a87AkpgkzuOLspwyTO8snC5E"  # an Ed25519 public key


def _positive(case: Any) -> bool:
    meta = getattr(case, "meta", None)
    generation = getattr(meta, "generation", None)
    mode = getattr(generation, "mode", None)
    return bool(getattr(mode, "is_positive", False))


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _number(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _ordered(low: object, high: object) -> bool:
    first, second = _number(low), _number(high)
    return first is None or second is None or first <= second


def _report_window(query: dict[str, Any]) -> bool:
    now = datetime.now(UTC)
    until = _moment(query.get("until")) or now
    since = _moment(query.get("since")) or until - timedelta(days=30)
    return since < until and until - since <= timedelta(days=REPORT_MAX_DAYS)


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    if not _positive(case):
        return True
    path, method = case.operation.path, case.operation.method.upper()
    query: dict[str, Any] = dict(case.query or {})
    body = case.body if isinstance(case.body, dict) else {}
    if query.get("cursor"):
        return False  # made up: only a cursor from an earlier answer is valid
    if isinstance(body.get("name"), str) and not name_acceptable(body["name"]):
        return False
    if path == "/audit/checkpoints/consistency":
        return _ordered(query.get("first"), query.get("second"))
    if path == "/audit/verify":
        return _ordered(query.get("from"), query.get("to"))
    if path == "/compliance/report":
        return _report_window(query)
    if path.endswith("/credentials") or path.endswith("/rotate"):
        expires = _moment(body.get("expires_at"))
        return expires is None or expires > datetime.now(UTC) + timedelta(minutes=5)
    if path == "/agents/{agent_pk}/keys" and method == "POST":
        return isinstance(case.body, dict)  # a key or a JWKS URI: completed by map_case
    if path == "/agent-info" and method == "POST":
        return "access_token" not in body
    if path in ("/agents", "/agents/{id}") and isinstance(body.get("skills"), list):
        ids = [s.get("id") for s in body["skills"] if isinstance(s, dict)]
        return len(ids) == len(set(map(str, ids)))
    return True


def _declared(case: Any) -> set[str] | None:
    """The properties a JSON request body may have, when its schema allows no others."""
    raw = case.operation.definition.raw
    media = raw.get("requestBody", {}).get("content", {}).get("application/json", {})
    schema = media.get("schema", {})
    reference = schema.get("$ref", "")
    if reference.startswith("#/components/schemas/"):
        schema = case.operation.schema.raw_schema["components"]["schemas"][
            reference.rsplit("/", 1)[1]
        ]
    if schema.get("additionalProperties") is not False:
        return None
    return set(schema.get("properties", {}))


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if not _positive(case) or not isinstance(case.body, dict):
        return case
    path = case.operation.path
    body = case.body
    declared = _declared(case)
    if declared is not None:
        # the stateful phase carries values over from earlier answers by name, and can put a
        # problem's "errors" into a body that declares no such field: not a valid request
        for name in set(body) - declared:
            del body[name]
    if path.startswith("/webhooks") and "url" in body:
        body["url"] = RECEIVER
    elif path == "/federation/trust" and BASE:
        body["issuer"] = BASE
        for name in ("did", "jwks_uri", "jwks_uri_other_host"):
            body.pop(name, None)
    if path.startswith("/federation/"):
        expires = _moment(body.get("expires_at"))
        if expires is not None and expires <= datetime.now(UTC) + timedelta(minutes=5):
            body["expires_at"] = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    elif path == "/resources" or path == "/resources/{id}":
        # a resource indicator is an https URI no one registered (a taken one is a 409);
        # scopes are RFC 6749 scope tokens, each once
        if path == "/resources":
            body["identifier"] = f"https://fuzz-{uuid.uuid4().hex[:12]}.example/mcp"
        if "scopes" in body:
            body["scopes"] = [{"name": "tools:call", "description": "Call the tools"}]
    elif path.startswith("/resources/") and "scopes" in body:
        body["scopes"] = []  # scope names the resource defines: none is always valid
    elif path == "/agents/{agent_pk}/keys":
        body.clear()
        body["jwk"] = {"kty": "EC", "crv": "P-256", **P256}
    elif path.endswith("/did/keys") and isinstance(body.get("public_key_jwk"), dict):
        # only the members the key type defines (others, of any JSON type, are no valid JWK)
        if body["public_key_jwk"].get("kty") == "OKP":
            body["public_key_jwk"] = {"kty": "OKP", "crv": "Ed25519", "x": ED25519_X}
        else:
            body["public_key_jwk"] = {"kty": "EC", "crv": "P-256", **P256}
    return case
