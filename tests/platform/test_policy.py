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
