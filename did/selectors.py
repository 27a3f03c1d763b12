"""Public reads: an agent's DID material, found through the one narrow cross-organization door.

Public documents need no token, so the request has no organization. ``did_agent_organization``
(SECURITY DEFINER, like the token endpoint's client lookup) reveals only which organization an
agent id belongs to; everything else is then read in that organization, under RLS.
"""

import uuid
from dataclasses import dataclass

from django.db import connection

from agentidp.tenancy import tenant_context
from agents.models import Agent
from credentials.keys import HeldKey
from did.choices import DidKeyStatus
from did.models import AgentDidKey
from organizations.models import Organization


@dataclass(frozen=True)
class PublicAgent:
    """What the public documents may show of an agent."""

    agent: Agent
    keys: list[AgentDidKey]
    organization_status: str


def agent_public(agent_id: uuid.UUID) -> PublicAgent | None:
    """The agent and its DID keys, or None if there is no such agent."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT did_agent_organization(%s::uuid)", [str(agent_id)])
        row = cursor.fetchone()
    if row is None or row[0] is None:
        return None
    organization_id: uuid.UUID = row[0]
    with tenant_context(organization_id):
        agent = Agent.objects.filter(organization_id=organization_id, id=agent_id).first()
        if agent is None:
            return None
        keys = list(AgentDidKey.objects.filter(organization_id=organization_id, agent=agent))
        status = Organization.objects.values_list("status", flat=True).get(id=organization_id)
    return PublicAgent(agent=agent, keys=keys, organization_status=status)


def did_held_keys(organization_id: uuid.UUID, agent_id: uuid.UUID) -> list[HeldKey]:
    """The agent's DID key it holds itself (the active, non-custodial verification method), to
    authenticate with ``private_key_jwt`` (``credentials.keys.held_keys``): an assertion names
    it by its kid or by its DID URL (``did:web:...#kid``). Custodial keys never authenticate:
    their private part is ours, not the agent's."""
    did = Agent.objects.filter(organization_id=organization_id, id=agent_id).values_list(
        "did", flat=True
    )
    found = AgentDidKey.objects.filter(
        organization_id=organization_id, agent_id=agent_id,
        status=DidKeyStatus.ACTIVE, custodial=False,
    )  # fmt: skip
    identifier = next(iter(did), "")
    return [
        HeldKey(id=key.id, kid=key.kid, public_jwk=dict(key.public_jwk),
                aliases=(f"{identifier}#{key.kid}",) if identifier else ())
        for key in found
    ]  # fmt: skip
