"""Agent cards: an A2A AgentCard signed by this deployment, and an AGNTCY (OASF) record.

The A2A card's ``signatures`` entry is a detached JWS (RFC 7515 appendix F) over the card's
RFC 8785 (JCS) canonical form without ``signatures``; its protected header names ``alg``,
``typ`` and a ``kid`` that is a verification method of the instance DID document (one of the
JWKS keys), so any JOSE library can verify it from the DID alone.
"""

import base64
import json
from collections.abc import Mapping

import rfc8785

from agentidp.conf import agentidp_settings
from agentidp.errors import JSONValue
from agents.choices import AgentStatus
from did.selectors import PublicAgent
from did.web import instance_did
from oidc.keys import signing_key_current
from oidc.tokens import jws_signature
from organizations.choices import AGENT_SCOPES, IDENTITY_SCOPES, OrganizationStatus, Scope

A2A_PROTOCOL_VERSION = "0.3.0"
OASF_SCHEMA_VERSION = "0.7.0"
DEFAULT_MODES: list[JSONValue] = ["application/json", "text/plain"]
IDENTITY_EXTENSION = "https://agentidp.dev/extensions/did-identity/v1"


def card_status(public: PublicAgent) -> str:
    """What the card says of the agent: suspended when its organization is."""
    if public.organization_status != OrganizationStatus.ACTIVE:
        return AgentStatus.SUSPENDED
    return public.agent.status


def _skills(public: PublicAgent) -> list[JSONValue]:
    skills = public.agent.skills if isinstance(public.agent.skills, list) else []
    return [
        {
            "id": skill["id"],
            "name": skill["name"],
            "description": skill.get("description", ""),
            "tags": list(skill.get("tags", [])),
        }
        for skill in skills
        if isinstance(skill, dict)
    ]


def a2a_card(public: PublicAgent) -> dict[str, JSONValue]:
    """The A2A AgentCard, signed."""
    agent = public.agent
    issuer = agentidp_settings().issuer
    scopes: dict[str, JSONValue] = {
        str(scope): Scope(scope).label for scope in sorted(AGENT_SCOPES - IDENTITY_SCOPES)
    }
    card: dict[str, JSONValue] = {
        "protocolVersion": A2A_PROTOCOL_VERSION,
        "name": agent.name,
        "description": agent.description,
        "url": f"{issuer}/agents/{agent.id}",
        "version": agent.version or "1.0.0",
        "provider": {"organization": str(agent.organization_id), "url": issuer},
        "capabilities": {
            "streaming": False,
            "pushNotifications": False,
            "stateTransitionHistory": False,
            "extensions": [
                {
                    "uri": IDENTITY_EXTENSION,
                    "description": "The agent's did:web DID and status at its identity provider",
                    "required": False,
                    "params": {"did": agent.did, "status": card_status(public)},
                }
            ],
        },
        "defaultInputModes": list(DEFAULT_MODES),
        "defaultOutputModes": list(DEFAULT_MODES),
        "skills": _skills(public),
        "securitySchemes": {
            "agentidp": {
                "type": "oauth2",
                "description": "Client credentials at this agent's identity provider",
                "flows": {
                    "clientCredentials": {"tokenUrl": f"{issuer}/oauth2/token", "scopes": scopes}
                },
            }
        },
        "security": [{"agentidp": []}],
    }
    card["signatures"] = [card_signature(card)]
    return card


def card_signature(card: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
    """A detached JWS over the JCS form of ``card`` (less any ``signatures``)."""
    signing = signing_key_current()
    header = {"alg": signing.algorithm, "typ": "JOSE", "kid": f"{instance_did()}#{signing.kid}"}
    protected = _b64(json.dumps(header, separators=(",", ":")).encode())
    payload = _b64(rfc8785.dumps({k: v for k, v in card.items() if k != "signatures"}))
    signature = jws_signature(signing, f"{protected}.{payload}".encode())
    return {"protected": protected, "signature": _b64(signature)}


def agntcy_record(public: PublicAgent) -> dict[str, JSONValue]:
    """The AGNTCY agent record (OASF fields), pointing at the A2A card and carrying the DID."""
    agent = public.agent
    issuer = agentidp_settings().issuer
    skills: list[JSONValue] = [
        {"id": skill["id"], "name": skill["name"]}
        for skill in _skills(public)
        if isinstance(skill, dict)
    ]
    return {
        "name": agent.name,
        "version": agent.version or "1.0.0",
        "schema_version": OASF_SCHEMA_VERSION,
        "description": agent.description,
        "authors": list(agent.authors),
        "created_at": agent.created_at.isoformat().replace("+00:00", "Z"),
        "skills": skills,
        "locators": [
            {"type": "a2a-agent-card", "url": f"{issuer}/agents/{agent.id}/did/card?format=a2a"},
            {"type": "did-document", "url": f"{issuer}/agents/{agent.id}/did.json"},
        ],
        "did": agent.did,
        "status": card_status(public),
    }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
