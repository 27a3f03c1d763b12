"""Writes of the authorization server: signing keys, issued tokens, revocations."""

import datetime as dt
import hashlib
import json
import uuid
from typing import cast

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from agentidp.conf import agentidp_settings
from agentidp.errors import JSONValue
from agentidp.events import event_record
from agentidp.lifecycle import AgentStatusChange, CredentialRevocation
from agentidp.principals import Principal
from agentidp.secrets import secret_store
from agentidp.tenancy import organization_applied
from agents.choices import AgentStatus
from compliance.services import CompanionInsert
from credentials.models import Client
from oidc.choices import KeyStatus, RevocationReason
from oidc.keys import create_key, key_lock, key_ring, private_key_path
from oidc.models import AccessToken, RevokedToken, SigningKey
from oidc.revocation import jti_is_revoked, jti_revoke, jtis_cache
from oidc.tokens import InvalidToken, VerifiedToken, access_token_verify
from organizations.choices import AGENT_SCOPES, OrganizationStatus
from organizations.models import SYSTEM_ORGANIZATION_ID


@transaction.atomic
def signing_key_rotate(*, actor: Principal, algorithm: str | None = None) -> SigningKey:
    """Promote the next key to current, retire the old one, publish a fresh next key.

    The retired key stays in the JWKS until every token it signed has expired (the global
    maximum lifetime plus leeway), so no live token ever fails to verify. The next key was
    published a rotation ahead, so verifiers caching the JWKS already know it.
    """
    key_lock()
    algorithm = algorithm or str(settings.AGENTIDP["SIGNING_ALGORITHM"])
    now = timezone.now()
    lifetime = int(settings.AGENTIDP["ACCESS_TOKEN_MAX_LIFETIME"])
    leeway = int(settings.AGENTIDP["TOKEN_LEEWAY_SECONDS"])
    old = SigningKey.objects.select_for_update().filter(status=KeyStatus.CURRENT).first()
    if old is not None:
        old.status = KeyStatus.RETIRED
        old.retired_at = now
        old.verify_until = now + dt.timedelta(seconds=lifetime + leeway)
        old.save(update_fields=["status", "retired_at", "verify_until"])
    upcoming = SigningKey.objects.select_for_update().filter(status=KeyStatus.NEXT).first()
    if upcoming is None or upcoming.algorithm != algorithm:
        if upcoming is not None:
            upcoming.delete()
        current = create_key(KeyStatus.CURRENT, algorithm)
    else:
        upcoming.status = KeyStatus.CURRENT
        upcoming.activated_at = now
        upcoming.save(update_fields=["status", "activated_at"])
        current = upcoming
    create_key(KeyStatus.NEXT, algorithm)
    expired = SigningKey.objects.filter(status=KeyStatus.RETIRED, verify_until__lte=now)
    for key in expired:
        secret_store().delete(private_key_path(key.kid))
    expired.delete()
    transaction.on_commit(key_ring.clear)
    data: dict[str, JSONValue] = {
        "kid": current.kid,
        "algorithm": algorithm,
        "retired": old.kid if old else None,
    }
    event_record(
        organization_id=SYSTEM_ORGANIZATION_ID,
        actor=actor,
        action="signing_key.rotated",
        subject_type="signing_key",
        subject_id=current.kid,
        data=data,
    )
    return current


def signing_keys_published() -> list[dict[str, JSONValue]]:
    """Public JWKs for the JWKS document: next, current and still-verifying retired keys."""
    now = timezone.now()
    keys = SigningKey.objects.exclude(status=KeyStatus.RETIRED).union(
        SigningKey.objects.filter(status=KeyStatus.RETIRED, verify_until__gt=now)
    )
    return [dict(key.public_jwk) for key in keys]


def client_actor(client: Client) -> Principal:
    """The agent behind a client, as the actor of its token events."""
    return Principal(kind="agent", id=str(client.agent_id), organization_id=client.organization_id)


def token_issued_data(
    *, client_id: str, scope: str, audiences: list[str], credential_id: uuid.UUID | None
) -> dict[str, JSONValue]:
    """The data of a ``token.issued`` event, whichever path issued the token."""
    return {
        "client_id": client_id,
        "scope": scope,
        "aud": [str(audience) for audience in audiences],
        "credential_id": str(credential_id) if credential_id else None,
    }


ACCESS_TOKEN_INSERT = """
INSERT INTO oidc_accesstoken (organization_id, application_id, token, token_checksum, jti,
                              scope, expires, resource, created, updated, credential_id)
VALUES (%s, %s, '', %s, %s, %s, %s, %s::jsonb, %s, %s, %s)
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
    )
    insert = CompanionInsert(
        ACCESS_TOKEN_INSERT,
        [
            issued.organization_id, client.id, issued.token_checksum, issued.jti, scope,
            issued.expires, json.dumps(audiences), now, now, credential_id,
        ],
    )  # fmt: skip
    event_record(
        organization_id=client.organization_id,
        actor=client_actor(client),
        action="token.issued",
        subject_type="token",
        subject_id=jti,
        data=token_issued_data(
            client_id=client.client_id,
            scope=scope,
            audiences=audiences,
            credential_id=credential_id,
        ),
        companion=insert,
    )
    issued.id = cast(int, insert.inserted_id)
    issued._state.adding = False
    return issued


def _revocations_record(
    *,
    organization_id: uuid.UUID,
    tokens: list[tuple[uuid.UUID, dt.datetime]],
    reason: RevocationReason,
) -> None:
    """The durable record of revoked tokens (idempotent: a jti is recorded once)."""
    now = timezone.now()
    RevokedToken.objects.bulk_create(
        [
            RevokedToken(
                organization_id=organization_id,
                jti=jti,
                expires_at=expires,
                revoked_at=now,
                reason=reason,
            )
            for jti, expires in tokens
        ],
        ignore_conflicts=True,
    )


def revocations_purge(*, organization_id: uuid.UUID) -> int:
    """Forget revocations of tokens that have expired (nothing can present them any more)."""
    deleted, _ = RevokedToken.objects.filter(
        organization_id=organization_id, expires_at__lte=timezone.now()
    ).delete()
    return deleted


def access_token_revoke(*, actor: Principal, client: Client, jti: str, expires_at: int) -> bool:
    """Revoke one of the client's tokens: recorded in the database until it would have
    expired, listed in Redis before the transaction commits, audited as ``actor``'s act (the
    client itself at /oauth2/revoke, a staff member in the admin).

    Returns whether the token was one this server has a record of issuing.
    """
    token_id = uuid.UUID(jti)
    known = AccessToken.objects.filter(
        organization_id=client.organization_id, application=client, jti=token_id
    ).exists()
    expires = dt.datetime.fromtimestamp(expires_at, tz=dt.UTC)
    _revocations_record(
        organization_id=client.organization_id,
        tokens=[(token_id, expires)],
        reason=RevocationReason.CLIENT_REQUEST,
    )
    jti_revoke(jti, expires_at=expires_at)
    event_record(
        organization_id=client.organization_id,
        actor=actor,
        action="token.revoked",
        subject_type="token",
        subject_id=jti,
        data={"client_id": client.client_id, "known": known},
    )
    return known


def _live_tokens_revoke(
    *, organization_id: uuid.UUID, tokens: QuerySet[AccessToken], reason: RevocationReason
) -> int:
    """Revoke every unexpired token of ``tokens`` by the same rule as one revocation: the
    durable record, then the Redis list before the transaction commits (a Redis outage fails
    the change instead of leaving the list behind the database)."""
    live = list(tokens.filter(expires__gt=timezone.now()).values_list("jti", "expires"))
    if not live:
        return 0
    _revocations_record(organization_id=organization_id, tokens=live, reason=reason)
    jtis_cache((str(jti), int(expires.timestamp())) for jti, expires in live)
    return len(live)


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
       (SELECT o.status FROM organizations_organization o WHERE o.id = %s::uuid)
"""


def token_standing(verified: VerifiedToken) -> str | None:
    """Why a token whose signature and claims verified may not be used now, or None.

    The one rule the API (bearer authentication) and introspection share: not revoked, its
    agent and organization active, and issued after the agent was last suspended. Enters the
    token's organization on the current transaction. Raises ``RedisError`` when the
    revocation list cannot be asked.
    """
    if jti_is_revoked(verified.jti):
        return "revoked"
    try:
        agent_id = uuid.UUID(verified.subject)
    except ValueError:
        return "claims"
    organization_id = str(verified.organization_id)
    with connection.cursor() as cursor:
        cursor.execute(STANDING_SQL, [organization_id, agent_id, agent_id, organization_id])
        row = cursor.fetchone()
    organization_applied(verified.organization_id)
    if row is None or row[1] != AgentStatus.ACTIVE or row[3] != OrganizationStatus.ACTIVE:
        return "agent_inactive"
    not_before: dt.datetime | None = row[2]
    if not_before is not None and verified.issued_at < not_before.timestamp():
        return "revoked"
    return None


def token_introspect(*, client: Client, token: str) -> dict[str, JSONValue]:
    """RFC 7662 for an authenticated client: active only for a token of the client's own
    organization (any audience) that the API would accept; anything else is
    ``{"active": false}``."""
    try:
        verified = access_token_verify(token, any_audience=True)
    except InvalidToken:
        return {"active": False}
    if verified.organization_id != client.organization_id or token_standing(verified):
        return {"active": False}
    return {"active": True, "token_type": "Bearer", **verified.claims}


def discovery_document() -> dict[str, JSONValue]:
    """RFC 8414 authorization server metadata; ``issuer`` equals the tokens' ``iss``."""
    issuer = agentidp_settings().issuer
    scopes: list[JSONValue] = [str(scope) for scope in sorted(AGENT_SCOPES)]
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/oauth2/token",
        "revocation_endpoint": f"{issuer}/oauth2/revoke",
        "introspection_endpoint": f"{issuer}/oauth2/introspect",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "scopes_supported": scopes,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [str(settings.AGENTIDP["SIGNING_ALGORITHM"])],
        "access_token_signing_alg_values_supported": ["ES256", "RS256", "EdDSA"],
        "resource_indicators_supported": True,
        "service_documentation": f"{issuer}/api/docs/",
    }
