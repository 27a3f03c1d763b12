"""The authorization decision for every API action, made by ``policies/authz.rego``.

The policy is evaluated in-process by ``regopy`` (a Rego interpreter) from a bundle compiled
once at start, or by an OPA server over HTTP when ``OPA_URL`` is set. Any error denies.
Decisions are a pure function of their input, so a bounded cache keeps repeated identical
questions off the interpreter.
"""

import json
import logging
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol
from uuid import UUID

import requests
from django.conf import settings
from prometheus_client import Counter
from regopy import Interpreter

from agentidp.lru import BoundedLRU
from agentidp.principals import Principal
from organizations.choices import scopes_implied

logger = logging.getLogger("agentidp.policy")
DECISIONS = Counter("agentidp_policy_decisions_total", "Policy decisions.", ["result"])
QUERY = "data.agentidp.authz.allow"


@dataclass(frozen=True)
class Resource:
    """What an action targets: its type and the organization that owns it (if known)."""

    type: str
    organization_id: UUID | None = None


class PolicyEngine(Protocol):
    def decide(self, document: str) -> bool: ...


class RegoEngine:
    """``policies/authz.rego`` compiled once into a bundle; queries are serialized."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._interpreter = Interpreter()
        self._interpreter.add_module("authz", path.read_text())
        self._bundle = self._interpreter.build(QUERY)

    def decide(self, document: str) -> bool:
        with self._lock:
            self._interpreter.set_input_term(document)
            output = self._interpreter.query_bundle(self._bundle)
        text = str(output)
        if not output.ok():
            raise RuntimeError(f"policy query failed: {text[:500]}")
        if text == "undefined":  # how regopy's bundle reports a rule that did not hold
            return False
        decided: bool = json.loads(text) == {"expressions": [True]}
        return decided


class OpaEngine:
    """An OPA server's Data API (``POST /v1/data/agentidp/authz/allow``)."""

    def __init__(self, url: str, timeout: float = 1.0) -> None:
        self.url = url.rstrip("/") + "/v1/data/agentidp/authz/allow"
        self.timeout = timeout
        self.session = requests.Session()

    def decide(self, document: str) -> bool:
        response = self.session.post(
            self.url,
            data=f'{{"input": {document}}}',
            headers={"Content-Type": "application/json"},
            timeout=self.timeout,
        )
        response.raise_for_status()
        return response.json().get("result") is True


@cache
def policy_engine() -> PolicyEngine:
    config: dict[str, str] = settings.AGENTIDP["POLICY"]
    if config["OPA_URL"]:
        return OpaEngine(config["OPA_URL"])
    return RegoEngine(Path(config["PATH"]))


decision_cache: BoundedLRU[str, bool] = BoundedLRU(max_entries=4096)


def policy_input(
    principal: Principal, *, action: str, scope: str, resource: Resource, safe: bool = True
) -> str:
    """The canonical JSON document the policy sees."""
    document = {
        "principal": {
            "kind": principal.kind,
            "organization_id": str(principal.organization_id)
            if principal.organization_id
            else None,
            "scopes": sorted(scopes_implied(principal.scopes)),
            "status": principal.status,
            "platform": principal.is_platform,
            "read_only": principal.read_only,
            "act": list(principal.act),
        },
        "action": action,
        "safe": safe,
        "scope": scope,
        "resource": {
            "type": resource.type,
            "organization_id": str(resource.organization_id) if resource.organization_id else None,
        },
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def authorize(
    principal: Principal, *, action: str, scope: str, resource: Resource, safe: bool = True
) -> bool:
    """Ask the policy; a policy error denies (and is logged). ``safe``: the request only reads
    (GET, HEAD, OPTIONS)."""
    document = policy_input(principal, action=action, scope=scope, resource=resource, safe=safe)
    decision = decision_cache.get(document)
    if decision is None:
        try:
            decision = policy_engine().decide(document)
        except Exception:  # any failure of the policy engine must deny, never allow
            logger.exception("policy evaluation failed; denying")
            DECISIONS.labels(result="error").inc()
            return False
        decision_cache.put(document, decision)
    DECISIONS.labels(result="allow" if decision else "deny").inc()
    return decision
