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
