"""Writes of the authorization server: signing keys, issued tokens, revocations."""

import datetime as dt
import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import cast

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from redis import RedisError

from agentidp.conf import agentidp_settings
from agentidp.errors import Conflict, JSONValue, NotFound
from agentidp.events import event_record, event_record_after_request
from agentidp.lifecycle import AgentStatusChange, CredentialRevocation
from agentidp.principals import Principal
from agentidp.secrets import SecretStoreError, secret_store
from agentidp.tenancy import organization_applied, organization_enter, tenant_context
from agentidp.trust import delegation_trust
from agentidp.usage import redis_client
from agents.choices import AgentStatus
from agents.models import Agent
from compliance.services import CompanionInsert
from credentials.choices import SigningAlgorithm
from credentials.models import Client
from oidc.choices import KeyStatus, RevocationReason
from oidc.extensions import delegated_principal, grant_types_extra, is_delegated
from oidc.keys import (
    JWKS_CACHE_KEY,
    access_token_algorithm,
    create_key,
    jwks_cache_clear,
    key_event,
    key_lock,
    key_ring,
    private_key_path,
    signing_key_current,
    signing_keys_ensure,
    signing_keys_ensure_committed,
)
from oidc.models import AccessToken, RevokedToken, SigningKey
from oidc.revocation import jti_is_revoked, jti_revoke, jtis_cache
from oidc.selectors import live_tokens
from oidc.tokens import (
    ID_TOKEN_TYPE,
    TOKEN_EXCHANGE,
    Delegation,
    InvalidToken,
    VerifiedToken,
    access_token_verify,
    act_nested,
    chain_actors,
    chain_members,
    jws_sign,
    lifetime_capped,
    token_leeway,
)
from organizations.choices import AGENT_SCOPES, OrganizationStatus, Scope

logger = logging.getLogger("agentidp.keys")


class RotationRefused(Conflict):
    """A rotation that would start signing with a key relying parties may not know yet."""


@dataclass(frozen=True)
class Rotation:
    """What one rotation did, per algorithm: the key now signing and the one it retired."""

    activated: dict[str, SigningKey]
    retired: dict[str, str]
    removed: list[str]


def _prepublished_since(key: SigningKey) -> dt.datetime:
    """When ``key`` may start signing: a full pre-publication window after it was published."""
    window = int(settings.AGENTIDP["KEY_PREPUBLISH_SECONDS"])
    return key.created_at + dt.timedelta(seconds=window)


@transaction.atomic
def signing_key_rotate(*, actor: Principal, algorithms: Sequence[str] | None = None) -> Rotation:
    """Rotate every algorithm's keys (or those of ``algorithms``): the next key starts signing, the
    current one retires, a fresh next key is published, expired retired keys are removed.

    All or nothing: if any next key has been published for less than
    ``AGENTIDP_KEY_PREPUBLISH_SECONDS`` (a relying party's cached JWKS may not hold it yet),
    :class:`RotationRefused` names when it may sign and nothing changes. A secret store that
    cannot be written fails the rotation the same way: the current keys keep signing.

    A retired key stays in the JWKS until every token it signed has expired (the global
    maximum lifetime plus leeway), so no live token ever fails to verify.
    """
    key_lock()
    signing_keys_ensure(actor=actor)
    now = timezone.now()
    algorithms = list(algorithms or SigningAlgorithm.values)
    lifetime = int(settings.AGENTIDP["ACCESS_TOKEN_MAX_LIFETIME"])
    leeway = int(settings.AGENTIDP["TOKEN_LEEWAY_SECONDS"])
    keys = SigningKey.objects.select_for_update().filter(
        algorithm__in=algorithms, status__in=[KeyStatus.CURRENT, KeyStatus.NEXT]
    )
    by_role = {(key.algorithm, key.status): key for key in keys}
    early = {
        name: _prepublished_since(by_role[(name, KeyStatus.NEXT)])
        for name in algorithms
        if _prepublished_since(by_role[(name, KeyStatus.NEXT)]) > now
    }
    if early:
        when = ", ".join(f"{name} from {moment.isoformat()}" for name, moment in early.items())
        raise RotationRefused(
            "The next signing key has not been published long enough to start signing "
            f"(AGENTIDP_KEY_PREPUBLISH_SECONDS): {when}."
        )
    activated: dict[str, SigningKey] = {}
    retired: dict[str, str] = {}
    for name in algorithms:
        old, upcoming = by_role[(name, KeyStatus.CURRENT)], by_role[(name, KeyStatus.NEXT)]
        old.status, old.retired_at = KeyStatus.RETIRED, now
        old.verify_until = now + dt.timedelta(seconds=lifetime + leeway)
        old.save(update_fields=["status", "retired_at", "verify_until"])
        key_event(old, "key.retired", actor, verify_until=old.verify_until.isoformat())
        upcoming.status, upcoming.activated_at = KeyStatus.CURRENT, now
        upcoming.save(update_fields=["status", "activated_at"])
        key_event(upcoming, "key.activated", actor, replaces=old.kid)
        create_key(KeyStatus.NEXT, name, actor=actor)
        activated[name], retired[name] = upcoming, old.kid
    removed = signing_keys_remove_expired(actor=actor)
    transaction.on_commit(key_ring.clear)
    transaction.on_commit(jwks_cache_clear)
    return Rotation(activated=activated, retired=retired, removed=removed)


def signing_keys_status() -> dict[str, dict[str, JSONValue]]:
    """Per algorithm: the current key and since when it signs, the next key, since when it is
    published and from when a rotation may promote it."""
    status: dict[str, dict[str, JSONValue]] = {}
    keys = SigningKey.objects.filter(status__in=[KeyStatus.CURRENT, KeyStatus.NEXT])
    for key in keys.order_by("algorithm"):
        entry = status.setdefault(key.algorithm, {})
        if key.status == KeyStatus.CURRENT:
            entry["current"] = key.kid
            entry["signing_since"] = key.activated_at.isoformat() if key.activated_at else None
        else:
            entry["next"] = key.kid
            entry["published_at"] = key.created_at.isoformat()
            entry["may_sign_from"] = _prepublished_since(key).isoformat()
    return status


def signing_keys_remove_expired(*, actor: Principal) -> list[str]:
    """Remove retired keys whose last token has expired: out of the JWKS (already, by their
    ``verify_until``), then, once that is committed, their private parts out of the secret
    store (a rolled-back removal must never leave a published key without its private part)."""
    expired = list(
        SigningKey.objects.filter(status=KeyStatus.RETIRED, verify_until__lte=timezone.now())
    )
    kids = [key.kid for key in expired]
    for key in expired:
        key_event(key, "key.removed", actor)
    SigningKey.objects.filter(kid__in=kids).delete()
    for kid in kids:
        transaction.on_commit(partial(_private_key_forget, kid))
    return kids


def _private_key_forget(kid: str) -> None:
    try:
        secret_store().delete(private_key_path(kid))
    except SecretStoreError as exc:
        # An orphaned private part of a key no token needs: logged, harmless, removable later.
        logger.warning("private part of removed key %s not deleted: %s", kid, type(exc).__name__)


def signing_keys_published() -> list[dict[str, JSONValue]]:
    """Public JWKs for the JWKS document: next, current and still-verifying retired keys."""
    return [dict(key.public_jwk) for key in _published()]


def _published() -> list[SigningKey]:
    now = timezone.now()
    return list(
        SigningKey.objects.exclude(status=KeyStatus.RETIRED).union(
            SigningKey.objects.filter(status=KeyStatus.RETIRED, verify_until__gt=now)
        )
    )


def jwks_document() -> bytes:
    """The JWKS as served: from Redis while cached, else built from the database (creating
    the first keys if there are none) and cached until the next retired key expires, at most
    ``AGENTIDP_JWKS_MAX_AGE``. Rotation clears it. Redis being down only costs the cache.

    The cached value carries its own deadline (``<epoch ms>|<document>``) besides Redis's TTL,
    so the application's clock, not only Redis's, decides when a retired key leaves it."""
    now = timezone.now()
    try:
        cached = redis_client().get(JWKS_CACHE_KEY)
    except RedisError:
        cached = None
    if isinstance(cached, bytes):
        deadline, _, body = cached.partition(b"|")
        if deadline.isdigit() and int(deadline) > now.timestamp() * 1000:
            return body
    keys = _published()
    if not keys:
        signing_keys_ensure_committed()
        keys = _published()
    body = json.dumps({"keys": [key.public_jwk for key in keys]}).encode()
    ttl = float(settings.AGENTIDP["JWKS_MAX_AGE"])
    for key in keys:
        if key.verify_until is not None:
            ttl = min(ttl, (key.verify_until - now).total_seconds())
    ttl_ms = max(1, int(ttl * 1000))
    deadline_ms = int(now.timestamp() * 1000) + ttl_ms
    try:
        redis_client().set(JWKS_CACHE_KEY, b"%d|%s" % (deadline_ms, body), px=ttl_ms)
    except RedisError:
        logger.info("JWKS not cached: Redis unavailable")
    return body


def client_actor(client: Client) -> Principal:
    """The agent behind a client, as the actor of its token events."""
    return Principal(kind="agent", id=str(client.agent_id), organization_id=client.organization_id)


def client_refusal_record(client: Client, action: str, data: dict[str, JSONValue]) -> None:
    """Audit a client's token request refused (``action`` with ``data``: its reason and error),
    after the request, whose transaction rolls back."""
    event_record_after_request(
        organization_id=client.organization_id, actor=client_actor(client), action=action,
        subject_type="client", subject_id=client.client_id, data=data,
    )  # fmt: skip


def token_issued_data(
    *,
    client_id: str,
    scope: str,
    audiences: list[str],
    credential_id: uuid.UUID | None,
    id_token: bool,
    delegation: Delegation | None = None,
    caller_organization_id: uuid.UUID | None = None,
) -> dict[str, JSONValue]:
    """The data of a ``token.issued`` event, whichever path issued the token; for a token
    exchange, who it is for and the chain (and the subject's organization when it is not the
    caller's)."""
    data: dict[str, JSONValue] = {
        "client_id": client_id,
        "scope": scope,
        "aud": [str(audience) for audience in audiences],
        "credential_id": str(credential_id) if credential_id else None,
        "id_token": id_token,
    }
    if delegation is not None:
        data.update(
            grant_type=TOKEN_EXCHANGE,
            sub=str(delegation.subject_agent_id), act=delegation.act,
            parent_jti=delegation.parent_jti, depth=delegation.depth,
        )  # fmt: skip
        if delegation.organization_id != caller_organization_id:
            data["organization_id"] = str(delegation.organization_id)
    return data


# Recorded in the subject agent's organization when an agent of another one (trusted to act for
# its agents) is handed a token for it.
DELEGATED_EVENT = "token.delegated"  # noqa: S105 - an event name

ACCESS_TOKEN_INSERT = """
INSERT INTO oidc_accesstoken (organization_id, application_id, token, token_checksum, jti,
                              scope, expires, resource, created, updated, credential_id,
                              parent_jti, status_idx)
VALUES (%s, %s, '', %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s)
RETURNING id
"""  # noqa: S105 - SQL, not a secret


def access_token_record(
    *,
    client: Client,
    token: str,
    jti: str,
    scope: str,
    expires_in: int,
    audiences: list[str],
    credential_id: uuid.UUID | None,
    id_token: bool,
    status_idx: int | None,
    delegation: Delegation | None = None,
) -> AccessToken:
    """Persist an issued token and record ``token.issued``: one statement, one round trip.

    Only the token's SHA-256 checksum is stored (RFC 9700 4.14: a bearer token at rest is a
    credential); the jti identifies it for revocation and introspection.
    """
    now = timezone.now()
    issued = AccessToken(
        organization_id=client.organization_id,
        application=client,
        token="",
        token_checksum=hashlib.sha256(token.encode()).hexdigest(),
        jti=uuid.UUID(jti),
        scope=scope,
        expires=now + dt.timedelta(seconds=expires_in),
        resource=audiences,
        created=now,
        updated=now,
        credential_id=credential_id,
        parent_jti=uuid.UUID(delegation.parent_jti) if delegation else None,
        status_idx=status_idx,
    )
    insert = CompanionInsert(
        ACCESS_TOKEN_INSERT,
        [
            issued.organization_id, client.id, issued.token_checksum, issued.jti, scope,
            issued.expires, json.dumps(audiences), now, now, credential_id, issued.parent_jti,
            status_idx,
        ],
    )  # fmt: skip
    data = token_issued_data(
        client_id=client.client_id,
        scope=scope,
        audiences=audiences,
        credential_id=credential_id,
        id_token=id_token,
        delegation=delegation,
        caller_organization_id=client.organization_id,
    )
    event_record(
        organization_id=client.organization_id,
        actor=client_actor(client),
        action="token.issued",
        subject_type="token",
        subject_id=jti,
        data=data,
        companion=insert,
    )
    if delegation is not None and delegation.organization_id != client.organization_id:
        # The subject's organization keeps its own record of who was handed its agent's token.
        with tenant_context(delegation.organization_id):
            event_record(
                organization_id=delegation.organization_id,
                actor=client_actor(client),
                action=DELEGATED_EVENT,
                subject_type="token",
                subject_id=jti,
                data={**data, "caller_organization_id": str(client.organization_id)},
            )
    issued.id = cast(int, insert.inserted_id)
    issued._state.adding = False
    return issued


# A revoked token: its jti, when it expires, its status-list index (None before status lists).
Revoked = tuple[uuid.UUID, dt.datetime, int | None]


def _revocations_record(
    *, organization_id: uuid.UUID, tokens: list[Revoked], reason: RevocationReason
) -> None:
    """The durable record of revoked tokens (idempotent: a jti is recorded once); the status
    lists read their bits from it."""
    now = timezone.now()
    RevokedToken.objects.bulk_create(
        [
            RevokedToken(
                organization_id=organization_id,
                jti=jti,
                expires_at=expires,
                revoked_at=now,
                reason=reason,
                status_idx=status_idx,
            )
            for jti, expires, status_idx in tokens
        ],
        ignore_conflicts=True,
    )


def revocations_purge(*, organization_id: uuid.UUID) -> int:
    """Forget revocations of tokens that have expired (nothing can present them any more)."""
    deleted, _ = RevokedToken.objects.filter(
        organization_id=organization_id, expires_at__lte=timezone.now()
    ).delete()
    return deleted


# The live tokens exchanged from the roots, at any depth and in any organization (a trusted
# organization's agent may have exchanged one), recorded as revoked (reason lineage) in the
# same statement: one round trip however large the tree.
LINEAGE_REVOKE_SQL = "SELECT jti, expires FROM oidc_lineage_revoke(%s::uuid[], %s, %s)"


AUDIT_HEAD_LOCK_SQL = (
    "SELECT 1 FROM compliance_auditchainhead WHERE organization_id = %s FOR UPDATE"
)


def _lineage_revoke(*, organization_id: uuid.UUID, roots: list[uuid.UUID]) -> int:
    """Revoke every live token exchanged from ``roots``, at any depth (the delegation tree
    below them, one statement), in the revoking transaction: the tree goes with its root or
    not at all, and a crash leaves nothing half done. How many."""
    if not roots:
        return 0
    with connection.cursor() as cursor:
        # Held to the commit: a token exchanged from the tree meanwhile waits, then finds its
        # parent revoked; one committed first is read below (oidc_delegation_parent_live).
        cursor.execute(AUDIT_HEAD_LOCK_SQL, [organization_id])
        cursor.execute(
            LINEAGE_REVOKE_SQL,
            [[str(r) for r in roots], timezone.now(), RevocationReason.LINEAGE.value],
        )
        below = cursor.fetchall()
    if below:
        jtis_cache((str(jti), int(expires.timestamp())) for jti, expires in below)
    return len(below)


def access_token_revoke(*, actor: Principal, client: Client, jti: str, expires_at: int) -> bool:
    """Revoke one of the client's tokens: recorded in the database until it would have
    expired, listed in Redis before the transaction commits, audited as ``actor``'s act (the
    client itself at /oauth2/revoke, a staff member in the admin).

    Returns whether the token was one this server has a record of issuing.
    """
    token_id = uuid.UUID(jti)
    issued = (
        AccessToken.objects.filter(
            organization_id=client.organization_id, application=client, jti=token_id
        )
        .values_list("id", "status_idx")
        .first()
    )
    known = issued is not None
    expires = dt.datetime.fromtimestamp(expires_at, tz=dt.UTC)
    _revocations_record(
        organization_id=client.organization_id,
        tokens=[(token_id, expires, issued[1] if issued else None)],
        reason=RevocationReason.CLIENT_REQUEST,
    )
    jti_revoke(jti, expires_at=expires_at)
    derived = _lineage_revoke(organization_id=client.organization_id, roots=[token_id])
    event_record(
        organization_id=client.organization_id,
        actor=actor,
        action="token.revoked",
        subject_type="token",
        subject_id=jti,
        data={"client_id": client.client_id, "known": known, "derived_revoked": derived},
    )
    return known


def _live_tokens_revoke(
    *, organization_id: uuid.UUID, tokens: QuerySet[AccessToken], reason: RevocationReason
) -> int:
    """Revoke every unexpired token of ``tokens`` by the same rule as one revocation: the
    durable record, then the Redis list before the transaction commits (a Redis outage fails
    the change instead of leaving the list behind the database)."""
    live = list(
        tokens.filter(expires__gt=timezone.now()).values_list("jti", "expires", "status_idx")
    )
    if not live:
        return 0
    _revocations_record(organization_id=organization_id, tokens=live, reason=reason)
    jtis_cache((str(jti), int(expires.timestamp())) for jti, expires, _ in live)
    derived = _lineage_revoke(organization_id=organization_id, roots=[jti for jti, _, _ in live])
    return len(live) + derived


@transaction.atomic
def agent_tokens_revoke(
    *, actor: Principal, organization_id: uuid.UUID, agent_id: uuid.UUID
) -> int:
    """Revoke every live token of one agent, for good (its secrets keep working: it asks for
    new tokens); how many. Audited as ``agent.tokens_revoked``."""
    agent = Agent.objects.filter(organization_id=organization_id, id=agent_id).first()
    if agent is None:
        raise NotFound("No such agent.")
    revoked = _live_tokens_revoke(
        organization_id=organization_id,
        tokens=live_tokens(organization_id=organization_id, agent_ids=[agent_id]),
        reason=RevocationReason.AGENT_TOKENS_REVOKED,
    )
    event_record(
        organization_id=organization_id, actor=actor, action="agent.tokens_revoked",
        subject_type="agent", subject_id=str(agent_id), data={"tokens": revoked},
    )  # fmt: skip
    return revoked


def tokens_follow_agent_status(change: AgentStatusChange) -> None:
    """Lifecycle hook: suspending or decommissioning an agent revokes its live tokens for good.

    The agent's ``tokens_not_before`` (set by the agent service) already refuses them in the
    API and introspection; recording each one makes the revocation list say the same, and keeps
    them refused after a reactivation.
    """
    reasons = {
        AgentStatus.SUSPENDED: RevocationReason.AGENT_SUSPENDED,
        AgentStatus.DECOMMISSIONED: RevocationReason.AGENT_DECOMMISSIONED,
    }
    reason = reasons.get(AgentStatus(change.current))
    if reason is None:
        return
    _live_tokens_revoke(
        organization_id=change.organization_id,
        tokens=AccessToken.objects.filter(
            organization_id=change.organization_id, application__agent_id=change.agent_id
        ),
        reason=reason,
    )


def tokens_follow_credential_revocation(change: CredentialRevocation) -> None:
    """Lifecycle hook: revoking a secret revokes every live token issued with it."""
    _live_tokens_revoke(
        organization_id=change.organization_id,
        tokens=AccessToken.objects.filter(
            organization_id=change.organization_id, credential_id__in=change.credential_ids
        ),
        reason=RevocationReason.CREDENTIAL_REVOKED,
    )


STANDING_SQL = """
SELECT set_config('app.organization_id', %s, true),
       (SELECT a.status FROM agents_agent a WHERE a.id = %s),
       (SELECT a.tokens_not_before FROM agents_agent a WHERE a.id = %s),
       (SELECT o.status FROM organizations_organization o WHERE o.id = %s::uuid),
       (SELECT o.access_token_lifetime_seconds FROM organizations_organization o
         WHERE o.id = %s::uuid)
"""


def _actors_active(organization_id: uuid.UUID, act: JSONValue) -> bool:
    """Whether every agent of a delegation chain is active in its organization, and every
    other organization in it is still trusted by ``organization_id`` to act for its agents."""
    by_organization: dict[uuid.UUID, set[uuid.UUID]] = {}
    try:
        for agent, organization in chain_members(act, organization_id):
            by_organization.setdefault(uuid.UUID(organization), set()).add(uuid.UUID(agent))
    except ValueError:
        return False
    ids = by_organization.pop(organization_id, set())
    if ids and Agent.objects.filter(
        organization_id=organization_id, id__in=ids, status=AgentStatus.ACTIVE
    ).count() != len(ids):
        return False
    if not by_organization:
        return True
    try:
        return all(
            _trusted_actors_active(organization_id, organization, actors)
            for organization, actors in by_organization.items()
        )
    finally:
        # the reads above entered other organizations: the transaction acts for this one again
        organization_enter(organization_id)


def _trusted_actors_active(
    organization_id: uuid.UUID, actor_organization: uuid.UUID, actors: set[uuid.UUID]
) -> bool:
    if delegation_trust(organization_id, actor_organization) is None:
        return False
    with tenant_context(actor_organization):
        active = Agent.objects.filter(
            organization_id=actor_organization, id__in=actors, status=AgentStatus.ACTIVE
        ).count()
    return active == len(actors)


def token_principal(verified: VerifiedToken) -> Principal | str:
    """Who a token whose signature and claims verified stands for, or why it may not be used
    now.

    The one rule the API (bearer authentication) and introspection share: not revoked; for an
    agent's token, its agent and organization active, and issued after the agent was last
    suspended; for a delegated token (a partner's agent, :mod:`oidc.extensions`), whatever its
    registered resolver says. Enters the token's organization on the current transaction.
    Raises ``RedisError`` when the revocation list cannot be asked.
    """
    if jti_is_revoked(verified.jti):
        return "revoked"
    if is_delegated(verified):
        return delegated_principal(verified)
    try:
        agent_id = uuid.UUID(verified.subject)
    except ValueError:
        return "claims"
    organization_id = str(verified.organization_id)
    with connection.cursor() as cursor:
        cursor.execute(
            STANDING_SQL, [organization_id, agent_id, agent_id, organization_id, organization_id]
        )
        row = cursor.fetchone()
    organization_applied(verified.organization_id)
    if row is None or row[1] != AgentStatus.ACTIVE or row[3] != OrganizationStatus.ACTIVE:
        return "agent_inactive"
    not_before: dt.datetime | None = row[2]
    if not_before is not None and verified.issued_at < not_before.timestamp():
        return "revoked"
    if verified.expires_at - verified.issued_at > lifetime_capped(int(row[4])) + token_leeway():
        return "lifetime"  # longer than its organization lets a token live: not issued here
    actors = chain_actors(verified.claims.get("act"))
    if actors and not _actors_active(verified.organization_id, verified.claims.get("act")):
        return "actor_inactive"  # someone in the delegation chain may no longer act
    return Principal(
        kind="agent",
        id=verified.subject,
        organization_id=verified.organization_id,
        scopes=verified.scopes,
        display=str(verified.claims.get("client_id", "")),
        act=tuple(actors),
    )


def token_introspect(*, client: Client, token: str) -> dict[str, JSONValue]:
    """RFC 7662 for an authenticated client: active only for a token of the client's own
    organization (any audience) that the API would accept; anything else is
    ``{"active": false}``."""
    try:
        verified = access_token_verify(token, any_audience=True)
    except InvalidToken:
        return {"active": False}
    if verified.organization_id != client.organization_id:
        return {"active": False}
    if isinstance(token_principal(verified), str):
        return {"active": False}
    token_type = "DPoP" if "cnf" in verified.claims else "Bearer"  # RFC 9449 6.2
    return {"active": True, "token_type": token_type, **verified.claims}


@dataclass(frozen=True)
class AgentInfo:
    """The answer of ``/agent-info``: claims, and how the client registered to receive them."""

    claims: dict[str, JSONValue]
    # The client's ``userinfo_signed_response_alg``: "" for plain JSON.
    signed_alg: str
    client_id: str


def agent_info(
    *,
    organization_id: uuid.UUID,
    agent_id: uuid.UUID,
    client_id: str,
    scopes: frozenset[str],
    act: tuple[str, ...] = (),
) -> AgentInfo:
    """The agent-identity equivalent of OpenID Connect UserInfo (OIDC Core 5.3) for a verified
    access token: ``sub`` and the organization with ``openid``, the agent's name, status,
    capabilities and last change with ``profile``. Reads in the token's organization (the
    caller has entered it); a token whose agent or client is gone finds nothing. A delegated
    token (``act``: its actors, the latest first) is held by the latest actor's client, and the
    answer names the chain."""
    agent = Agent.objects.filter(organization_id=organization_id, id=agent_id).first()
    holder = uuid.UUID(act[0]) if act else agent_id
    client = Client.objects.filter(
        organization_id=organization_id, agent_id=holder, client_id=client_id
    ).first()
    if agent is None or client is None:
        raise NotFound("The token's agent no longer exists.")
    claims: dict[str, JSONValue] = {"sub": str(agent.id), "organization_id": str(organization_id)}
    if act:
        claims["act"] = act_nested(act)
    if agent.did:
        claims["did"] = agent.did
    if Scope.PROFILE in scopes:
        claims.update(
            agent_name=agent.name,
            agent_status=agent.status,
            capabilities=list(agent.capabilities),
            updated_at=int(agent.updated_at.timestamp()),
        )
    return AgentInfo(
        claims=claims, signed_alg=client.userinfo_signed_response_alg, client_id=client_id
    )


def agent_info_jwt(info: AgentInfo) -> str:
    """``/agent-info`` as the JWT a client registered ``userinfo_signed_response_alg`` for (OIDC
    Core 5.3.2): the claims with ``iss`` and ``aud``, signed by that algorithm's current key.
    No ``exp`` or ``auth_time``: it is neither an access token nor an id_token."""
    claims: dict[str, JSONValue] = {
        "iss": agentidp_settings().issuer,
        "aud": info.client_id,
        "iat": int(timezone.now().timestamp()),
        **info.claims,
    }
    return jws_sign(claims, signing_key_current(info.signed_alg), typ=ID_TOKEN_TYPE)


ID_TOKEN_CLAIMS = (
    "iss", "sub", "aud", "azp", "exp", "iat", "auth_time", "at_hash", "jti",
    "organization_id", "agent_name", "agent_status", "capabilities", "updated_at", "did", "act",
)  # fmt: skip
"""Every claim an id_token or /agent-info may carry (``claims_supported``)."""


def discovery_document() -> dict[str, JSONValue]:
    """The one metadata document, served as RFC 8414 authorization server metadata and as
    OpenID Connect Discovery 1.0 provider metadata. ``issuer`` equals the tokens' ``iss``;
    every endpoint is absolute and under it.

    Agents get tokens at the token endpoint with ``client_credentials``: there is no
    authorization endpoint, so no grant or response type that needs one is offered."""
    issuer = agentidp_settings().issuer
    scopes: list[JSONValue] = [str(scope) for scope in sorted(AGENT_SCOPES)]
    client_auth: list[JSONValue] = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
    assertion_algorithms: list[JSONValue] = ["ES256", "EdDSA", "PS256", "RS256"]
    algorithms: list[JSONValue] = [str(algorithm) for algorithm in SigningAlgorithm.values]
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/oauth2/token",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "userinfo_endpoint": f"{issuer}/agent-info",
        "revocation_endpoint": f"{issuer}/oauth2/revoke",
        "introspection_endpoint": f"{issuer}/oauth2/introspect",
        "scopes_supported": scopes,
        "response_types_supported": ["token"],
        "grant_types_supported": ["client_credentials", *grant_types_extra()],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algorithms,
        "userinfo_signing_alg_values_supported": algorithms,
        "access_token_signing_alg_values_supported": [access_token_algorithm()],
        "token_endpoint_auth_methods_supported": client_auth,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algorithms,
        "revocation_endpoint_auth_signing_alg_values_supported": assertion_algorithms,
        "introspection_endpoint_auth_signing_alg_values_supported": assertion_algorithms,
        "revocation_endpoint_auth_methods_supported": client_auth,
        "introspection_endpoint_auth_methods_supported": client_auth,
        "dpop_signing_alg_values_supported": assertion_algorithms,  # RFC 9449 5.1
        "claims_supported": list(ID_TOKEN_CLAIMS),
        "claim_types_supported": ["normal"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "code_challenge_methods_supported": ["S256"],
        "resource_indicators_supported": True,
        "service_documentation": f"{issuer}/api/docs/",
    }
