"""policies/authz.rego through the real regopy interpreter: allow and deny for each rule."""

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from agentidp.policy import Resource, authorize, decision_cache, policy_engine, policy_input
from agentidp.principals import Principal

ORG, OTHER = uuid.uuid4(), uuid.uuid4()


def agent(**overrides: Any) -> Principal:
    values: dict[str, Any] = {
        "kind": "agent",
        "id": "a",
        "organization_id": ORG,
        "scopes": frozenset({"agents:read"}),
    }
    values.update(overrides)
    return Principal(**values)


@pytest.fixture(autouse=True)
def _fresh_decisions() -> Iterator[None]:
    decision_cache.clear()
    yield
    decision_cache.clear()


def decide(principal: Principal, scope: str = "agents:read", org: uuid.UUID | None = ORG) -> bool:
    """The decision, asserting it came from the policy (errors are never cached)."""
    decided = authorize(principal, action="retrieve", scope=scope, resource=Resource("agent", org))
    document = policy_input(
        principal, action="retrieve", scope=scope, resource=Resource("agent", org)
    )
    assert decision_cache.get(document) is decided, "the policy engine failed instead of deciding"
    return decided


def test_active_principal_with_scope_in_its_organization_is_allowed() -> None:
    assert decide(agent())
    assert decide(agent(), org=None)  # a collection in the caller's own context


def test_inactive_principal_is_denied() -> None:
    assert not decide(agent(status="suspended"))


def test_missing_scope_is_denied() -> None:
    assert not decide(agent(), scope="agents:write")


def test_other_organization_is_denied() -> None:
    assert not decide(agent(), org=OTHER)


def test_platform_principal_may_cross_organizations() -> None:
    assert decide(agent(is_platform=True), org=OTHER)


def test_platform_scope_needs_a_platform_principal() -> None:
    claimed = agent(scopes=frozenset({"admin:orgs"}))
    assert not decide(claimed, scope="admin:orgs", org=None)
    assert decide(
        agent(scopes=frozenset({"admin:orgs"}), is_platform=True), scope="admin:orgs", org=None
    )


def test_policy_engine_failure_denies(settings: Any) -> None:
    settings.AGENTIDP = {
        **settings.AGENTIDP,
        "POLICY": {"PATH": "", "OPA_URL": "http://127.0.0.1:9"},
    }
    policy_engine.cache_clear()
    try:
        assert not authorize(
            agent(), action="retrieve", scope="agents:read", resource=Resource("agent", ORG)
        )
    finally:
        policy_engine.cache_clear()


def test_broken_policy_file_fails_loudly(tmp_path: Any) -> None:
    from agentidp.policy import RegoEngine

    broken = tmp_path / "authz.rego"
    broken.write_text("package agentidp.authz\nallow if {")
    with pytest.raises(Exception, match="(?i)error|parse|unexpected"):
        RegoEngine(broken)


@pytest.fixture
def opa_data_api(settings: Any) -> Iterator[list[dict[str, Any]]]:
    """A server speaking OPA's Data API (``POST /v1/data/<path>`` with ``{"input": ...}``,
    answering ``{"result": ...}``, no ``result`` when the rule is undefined), deciding with the
    real policy through regopy. OPA itself cannot be installed here (neither PyPI nor Debian
    ship it); this checks our client's side of the protocol. Each request body is recorded."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from pathlib import Path

    from agentidp.policy import RegoEngine

    engine = RegoEngine(Path(settings.AGENTIDP["POLICY"]["PATH"]))
    received: list[dict[str, Any]] = []

    class DataAPI(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append({"path": self.path, "body": body})
            if self.path != "/v1/data/agentidp/authz/allow":
                self.send_response(404)
                self.end_headers()
                return
            if body["input"]["action"] == "explode":
                self.send_response(500)
                self.end_headers()
                return
            allowed = engine.decide(json.dumps(body["input"]))
            answer = json.dumps({"result": True} if allowed else {}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), DataAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.AGENTIDP = {
        **settings.AGENTIDP,
        "POLICY": {"PATH": "", "OPA_URL": f"http://127.0.0.1:{server.server_address[1]}/"},
    }
    policy_engine.cache_clear()
    try:
        yield received
    finally:
        policy_engine.cache_clear()
        server.shutdown()
        server.server_close()


def test_opa_server_mode_asks_the_data_api(opa_data_api: list[dict[str, Any]]) -> None:
    assert decide(agent())
    assert not decide(agent(), org=OTHER)  # OPA leaves the rule undefined: deny
    assert not decide(agent(), scope="agents:write")
    assert opa_data_api[0]["path"] == "/v1/data/agentidp/authz/allow"
    assert opa_data_api[0]["body"]["input"]["resource"] == {
        "organization_id": str(ORG),
        "type": "agent",
    }
    assert len(opa_data_api) == 3
    decide(agent())  # decided before: answered from the decision cache
    assert len(opa_data_api) == 3


def test_opa_server_error_denies(opa_data_api: list[dict[str, Any]]) -> None:
    resource = Resource("agent", ORG)
    assert not authorize(agent(), action="explode", scope="agents:read", resource=resource)
    assert len(opa_data_api) == 1
