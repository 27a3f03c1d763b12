"""Writes of the DID app: an agent's did:web DID and its keys, and their deactivation.

Every agent gets its DID when it is registered (a lifecycle hook inside the registration's
transaction): a key pair of its organization's type, the private part written to the secret
store first, so a store that is down fails the registration and leaves nothing behind.
"""

import uuid
from collections.abc import Mapping

from django.db import models, transaction
from django.utils import timezone
from jwcrypto import jwk

from agentidp.errors import Conflict, JSONValue, ValidationFailed
from agentidp.events import event_record
from agentidp.lifecycle import (
    AgentRegistration,
    AgentStatusChange,
    CredentialRevocation,
    credentials_revoked,
)
from agentidp.principals import Principal
from agentidp.secrets import secret_store
from agents.choices import AgentStatus
from agents.models import Agent
from agents.services import agent_get
from compliance.encryption import EncryptedColumn, encrypt
from credentials.services import client_get_or_create
from did.cache import did_documents_forget
from did.choices import DidKeyStatus
from did.models import AgentDidKey
from did.web import agent_did
from organizations.choices import DidKeyAlgorithm
from organizations.models import Organization

# key type -> (jwcrypto arguments, JWS algorithm)
KEY_TYPES: dict[str, tuple[dict[str, str], str]] = {
    DidKeyAlgorithm.ED25519: ({"kty": "OKP", "crv": "Ed25519"}, "EdDSA"),
    DidKeyAlgorithm.P256: ({"kty": "EC", "crv": "P-256"}, "ES256"),
}


def did_key_path(organization_id: uuid.UUID, kid: str) -> str:
    """Where a custodial DID key's private part lives in the secret store."""
    return f"orgs/{organization_id}/did-keys/{kid}"


PRIVATE_KEY_COLUMN = EncryptedColumn("did.AgentDidKey", "private_key_ref")


def custodial_key_pair(
    *, organization_id: uuid.UUID, key_type: str
) -> tuple[str, str, dict[str, JSONValue]]:
    """A new key pair: the private part stored, ``(kid, algorithm, public JWK)`` returned."""
    arguments, algorithm = KEY_TYPES[key_type]
    private = jwk.JWK.generate(**arguments)
    kid = private.thumbprint()
    secret_store().write(did_key_path(organization_id, kid), {"jwk": private.export_private()})
    public: dict[str, JSONValue] = private.export_public(as_dict=True)
    public.update(kid=kid, alg=algorithm)
    return kid, algorithm, public


def _key_new(
    *,
    organization_id: uuid.UUID,
    agent_id: uuid.UUID,
    public_jwk: Mapping[str, JSONValue] | None = None,
) -> AgentDidKey:
    """A new unsaved key of the agent: custodial (generated, its private part stored and its
    secret-store reference kept encrypted) unless the agent gives its own public key."""
    if public_jwk is None:
        organization = Organization.objects.get(id=organization_id)
        kid, algorithm, public = custodial_key_pair(
            organization_id=organization_id, key_type=organization.did_key_algorithm
        )
    else:
        kid, algorithm, public = _agent_public_key(public_jwk)
    key = AgentDidKey(
        organization_id=organization_id, agent_id=agent_id, kid=kid, algorithm=algorithm,
        public_jwk=public, custodial=public_jwk is None,
    )  # fmt: skip
    if key.custodial:
        key.private_key_ref = encrypt(
            did_key_path(organization_id, kid),
            organization_id=organization_id,
            column=PRIVATE_KEY_COLUMN,
            row_id=key.id,
        )
    return key


def did_issue(*, actor: Principal, organization_id: uuid.UUID, agent_id: uuid.UUID) -> str:
    """Give the agent its DID and a first (custodial) key of its organization's type."""
    key = _key_new(organization_id=organization_id, agent_id=agent_id)
    key.save(force_insert=True)
    kid, algorithm = key.kid, key.algorithm
    did = agent_did(agent_id)
    Agent.objects.filter(organization_id=organization_id, id=agent_id).update(
        did=did, did_created_at=timezone.now()
    )
    event_record(
        organization_id=organization_id,
        actor=actor,
        action="did.created",
        subject_type="agent",
        subject_id=str(agent_id),
        data={"did": did, "kid": kid, "algorithm": algorithm, "custodial": True},
    )
    transaction.on_commit(lambda: did_documents_forget(agent_id))
    return did


def did_documents_follow_change(
    sender: type[models.Model], instance: models.Model, **kwargs: object
) -> None:
    """``post_save``/``post_delete`` receiver: forget the cached public documents of the agents
    a saved agent, DID key or organization touches, once the change commits."""
    if isinstance(instance, Agent):
        agent_ids = [instance.id]
    elif isinstance(instance, AgentDidKey):
        agent_ids = [instance.agent_id]
    elif isinstance(instance, Organization):
        agent_ids = list(
            Agent.objects.filter(organization_id=instance.id).values_list("id", flat=True)
        )
    else:
        return

    def forget() -> None:
        for agent_id in agent_ids:
            did_documents_forget(agent_id)

    transaction.on_commit(forget)


def did_issue_on_registration(registration: AgentRegistration) -> None:
    """Lifecycle hook: every newly registered agent gets its DID in the same transaction."""
    did_issue(
        actor=registration.actor,
        organization_id=registration.organization_id,
        agent_id=registration.agent_id,
    )


def did_follows_agent_status(change: AgentStatusChange) -> None:
    """Lifecycle hook: decommissioning deactivates the DID (its documents answer 410 Gone);
    any status change is visible at once (the cached documents are forgotten)."""
    transaction.on_commit(lambda: did_documents_forget(change.agent_id))
    if change.current != AgentStatus.DECOMMISSIONED:
        return
    did = agent_did(change.agent_id)
    AgentDidKey.objects.filter(
        organization_id=change.organization_id,
        agent_id=change.agent_id,
        status=DidKeyStatus.ACTIVE,
    ).update(status=DidKeyStatus.RETIRED, retired_at=timezone.now())
    event_record(
        organization_id=change.organization_id,
        actor=change.actor,
        action="did.deactivated",
        subject_type="agent",
        subject_id=str(change.agent_id),
        data={"did": did},
    )


def dids_ensure(*, actor: Principal, organization_id: uuid.UUID) -> list[str]:
    """Give every agent of the organization that has no DID yet its DID (safe to re-run:
    an agent with a DID is left alone). Returns the DIDs created."""
    missing = Agent.objects.filter(organization_id=organization_id, did="").values_list(
        "id", flat=True
    )
    return [
        did_issue(actor=actor, organization_id=organization_id, agent_id=agent_id)
        for agent_id in list(missing)
    ]


PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})
ACCEPTED_PUBLIC_KEYS = {("OKP", "Ed25519"): "EdDSA", ("EC", "P-256"): "ES256"}


def _agent_public_key(public_jwk: Mapping[str, JSONValue]) -> tuple[str, str, dict[str, JSONValue]]:
    """An agent's own public key (non-custodial), checked: an Ed25519 or P-256 public JWK and
    nothing private. Returns ``(kid, algorithm, public JWK)``."""
    if PRIVATE_JWK_MEMBERS & set(public_jwk):
        raise ValidationFailed(
            "Send the public key only.", errors={"public_key_jwk": ["Private members present."]}
        )
    algorithm = ACCEPTED_PUBLIC_KEYS.get((str(public_jwk.get("kty")), str(public_jwk.get("crv"))))
    if algorithm is None:
        raise ValidationFailed(
            "Unsupported key type.",
            errors={"public_key_jwk": ["An Ed25519 (OKP) or P-256 (EC) public JWK."]},
        )
    members = {k: v for k, v in public_jwk.items() if k in ("kty", "crv", "x", "y")}
    try:
        parsed = jwk.JWK(**members)
        parsed.get_op_key("verify")  # builds the key: a point off the curve is refused here
    except (jwk.InvalidJWKValue, jwk.InvalidJWKOperation, ValueError, TypeError) as exc:
        raise ValidationFailed(
            "Not a valid public key.", errors={"public_key_jwk": ["Not a valid JWK."]}
        ) from exc
    kid = parsed.thumbprint()
    public: dict[str, JSONValue] = parsed.export_public(as_dict=True)
    public.update(kid=kid, alg=algorithm)
    return kid, algorithm, public


@transaction.atomic
def did_key_rotate(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    agent_id: uuid.UUID,
    public_jwk: Mapping[str, JSONValue] | None = None,
) -> AgentDidKey:
    """A new active key for the agent's DID: generated and held by us (custodial), or the
    agent's own public key (non-custodial: we never see its private part). The previous key is
    retired and stays listed for ``DID_KEY_RETIRED_SECONDS``."""
    agent = agent_get(organization_id=organization_id, agent_id=agent_id, for_update=True)
    if agent.status == AgentStatus.DECOMMISSIONED:
        raise Conflict("A decommissioned agent's DID is deactivated.")
    key = _key_new(organization_id=organization_id, agent_id=agent_id, public_jwk=public_jwk)
    kid = key.kid
    if public_jwk is not None:
        # the agent's own key authenticates it (private_key_jwt): it needs its OAuth client
        client_get_or_create(organization_id=organization_id, agent=agent)
    keys = AgentDidKey.objects.filter(organization_id=organization_id, agent_id=agent_id)
    if keys.filter(kid=kid).exists():
        raise Conflict("This key is already one of the DID's keys.")
    retiring = list(keys.filter(status=DidKeyStatus.ACTIVE).values_list("id", "kid"))
    previous = [kid for _, kid in retiring]
    keys.filter(status=DidKeyStatus.ACTIVE).update(
        status=DidKeyStatus.RETIRED, retired_at=timezone.now()
    )
    key.save(force_insert=True)
    # A retired key no longer authenticates the agent (private_key_jwt), and the tokens
    # issued on its assertions are revoked with it, as when a registered key is removed.
    credentials_revoked(
        CredentialRevocation(
            organization_id=organization_id, credential_ids=tuple(i for i, _ in retiring),
            actor=actor,
        )
    )  # fmt: skip
    event_record(
        organization_id=organization_id,
        actor=actor,
        action="did.key_rotated",
        subject_type="agent",
        subject_id=str(agent_id),
        data={
            "did": agent.did,
            "kid": kid,
            "algorithm": key.algorithm,
            "custodial": public_jwk is None,
            "retired": list(previous),
        },
    )
    transaction.on_commit(lambda: did_documents_forget(agent_id))
    return key
