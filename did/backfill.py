"""The data migration's backfill: agents registered before DIDs existed get theirs.

It runs inside ``migrate`` on the owner's connection (BYPASSRLS, so it sees every
organization's agents; the application role is not granted the new table until migrate ends).
Per agent: the key's private part to the secret store first, then in the migration's
transaction the key row, the agent's DID and its ``did.created`` event, appended to the
organization's audit chain by the same SQL function the event function uses. Safe to re-run:
an agent that has a DID is skipped. ``ensuredids`` does the same through the services.
"""

import json

from django.db.backends.base.base import BaseDatabaseWrapper

from agentidp.principals import Principal
from compliance.services import AUDIT_APPEND_CALL, EventContent, audit_append_arguments
from did.services import custodial_key_pair
from did.web import agent_did

ACTOR = Principal.system("migration:did")

AGENTS_WITHOUT_DID = """
SELECT a.id, a.organization_id, o.did_key_algorithm
  FROM agents_agent a JOIN organizations_organization o ON o.id = a.organization_id
 WHERE a.did = ''
"""
KEY_INSERT = """
INSERT INTO agent_did_keys (id, organization_id, agent_id, kid, algorithm, public_jwk, status,
                            custodial, created_at)
VALUES (gen_random_uuid(), %s, %s, %s, %s, %s::jsonb, 'active', true, now())
"""


def dids_backfill(connection: BaseDatabaseWrapper) -> list[str]:
    """Give every agent without a DID its DID; returns the DIDs created."""
    created: list[str] = []
    with connection.cursor() as cursor:
        cursor.execute(AGENTS_WITHOUT_DID)
        for agent_id, organization_id, key_type in cursor.fetchall():
            kid, algorithm, public = custodial_key_pair(
                organization_id=organization_id, key_type=key_type
            )
            did = agent_did(agent_id)
            cursor.execute(
                "SELECT set_config('app.organization_id', %s, true)", [str(organization_id)]
            )
            cursor.execute(
                KEY_INSERT, [organization_id, agent_id, kid, algorithm, json.dumps(public)]
            )
            cursor.execute(
                "UPDATE agents_agent SET did = %s, did_created_at = now() WHERE id = %s",
                [did, agent_id],
            )
            content = EventContent.new(
                organization_id=organization_id,
                actor_type=ACTOR.kind,
                actor_id=ACTOR.id,
                action="did.created",
                outcome="success",
                subject_type="agent",
                subject_id=str(agent_id),
                data={"did": did, "kid": kid, "algorithm": algorithm, "custodial": True},
            )
            cursor.execute(f"SELECT 1 FROM {AUDIT_APPEND_CALL}", audit_append_arguments(content))  # noqa: S608 - constant SQL
            created.append(did)
    return created
