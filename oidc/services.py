"""Writes of the authorization server: signing keys, issued tokens, revocations."""

import datetime as dt
import hashlib
import json
import threading
import uuid
from typing import cast

from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone
from jwcrypto import jwk

from agentidp.conf import agentidp_settings
from agentidp.errors import JSONValue
from agentidp.events import event_record
from agentidp.lifecycle import AgentStatusChange
from agentidp.principals import Principal
from agentidp.secrets import secret_store
from agents.choices import AgentStatus
from compliance.services import CompanionInsert
from credentials.models import Client
from oidc.choices import KeyStatus, SigningAlgorithm
from oidc.keys import key_ring, private_key_path
from oidc.models import AccessToken, SigningKey
from oidc.revocation import jti_is_revoked, jti_revoke
from oidc.tokens import InvalidToken, access_token_verify

KEY_LOCK = 7_342_001  # pg_advisory_xact_lock id serializing key creation and rotation


def _generate(algorithm: str) -> jwk.JWK:
    if algorithm == SigningAlgorithm.ES256:
        return jwk.JWK.generate(kty="EC", crv="P-256")
    if algorithm == SigningAlgorithm.RS256:
        return jwk.JWK.generate(kty="RSA", size=2048)
    if algorithm == SigningAlgorithm.EDDSA:
        return jwk.JWK.generate(kty="OKP", crv="Ed25519")
    raise ValueError(f"unsupported signing algorithm {algorithm!r}")


def _create_key(status: str, algorithm: str) -> SigningKey:
    """Generate a key; the private part goes to the secret store before the row exists."""
    private = _generate(algorithm)
    kid = private.thumbprint()
    secret_store().write(private_key_path(kid), {"jwk": private.export_private()})
    public: dict[str, JSONValue] = private.export_public(as_dict=True)
    public.update(kid=kid, alg=algorithm, use="sig")
    now = timezone.now()
    return SigningKey.objects.create(
        kid=kid,
        algorithm=algorithm,
        status=status,
        public_jwk=public,
        activated_at=now if status == KeyStatus.CURRENT else None,
    )


def _lock() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [KEY_LOCK])


@transaction.atomic
def signing_key_ensure() -> SigningKey:
    """The current signing key, created (with a published next key) if there is none."""
    _lock()
    current = SigningKey.objects.filter(status=KeyStatus.CURRENT).first()
    if current is None:
        algorithm = str(settings.AGENTIDP["SIGNING_ALGORITHM"])
        current = _create_key(KeyStatus.CURRENT, algorithm)
        _create_key(KeyStatus.NEXT, algorithm)
    transaction.on_commit(key_ring.clear)
    return current


@transaction.atomic
def signing_key_ensure_committed() -> None:
    """Create the first keys in a transaction of their own, committed before we go on.

    Called when a token is requested and no key exists yet. A key created inside the request's
    transaction could be cached by this process and then rolled back with the request, leaving
    tokens signed by an unpublished kid; a separate connection commits independently.
    """
    failure: list[BaseException] = []

    def create() -> None:
        try:
            signing_key_ensure()
        except BaseException as exc:  # re-raised in the calling thread
            failure.append(exc)
        finally:
            connections.close_all()

    worker = threading.Thread(target=create, name="signing-key-ensure")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    key_ring.clear()


@transaction.atomic
def signing_key_rotate(*, actor: Principal, algorithm: str | None = None) -> SigningKey:
    """Promote the next key to current, retire the old one, publish a fresh next key.

    The retired key stays in the JWKS until every token it signed has expired (the global
    maximum lifetime plus leeway), so no live token ever fails to verify. The next key was
    published a rotation ahead, so verifiers caching the JWKS already know it.
    """
    _lock()
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
        current = _create_key(KeyStatus.CURRENT, algorithm)
    else:
        upcoming.status = KeyStatus.CURRENT
        upcoming.activated_at = now
        upcoming.save(update_fields=["status", "activated_at"])
        current = upcoming
    _create_key(KeyStatus.NEXT, algorithm)
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
    from organizations.models import SYSTEM_ORGANIZATION_ID

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


def _client_actor(client: Client) -> Principal:
    """The agent behind a client, as the actor of its token events."""
    return Principal(kind="agent", id=str(client.agent_id), organization_id=client.organization_id)


ACCESS_TOKEN_INSERT = """
INSERT INTO oidc_accesstoken (organization_id, application_id, token, token_checksum, jti,
                              scope, expires, resource, created, updated)
VALUES (%s, %s, '', %s, %s, %s, %s, %s::jsonb, %s, %s)
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
    )
    insert = CompanionInsert(
        ACCESS_TOKEN_INSERT,
        [
            issued.organization_id, client.id, issued.token_checksum, issued.jti, scope,
            issued.expires, json.dumps(audiences), now, now,
        ],
    )  # fmt: skip
    event_record(
        organization_id=client.organization_id,
        actor=_client_actor(client),
        action="token.issued",
        subject_type="token",
        subject_id=jti,
        data={
            "client_id": client.client_id,
            "scope": scope,
            "aud": [str(a) for a in audiences],
            "credential_id": str(credential_id) if credential_id else None,
        },
        companion=insert,
    )
    issued.id = cast(int, insert.inserted_id)
    issued._state.adding = False
    return issued


def access_token_revoke(*, client: Client, jti: str, expires_at: int) -> bool:
    """Revoke one of the client's tokens: listed in Redis after commit, audited now."""
    deleted, _ = AccessToken.objects.filter(
        organization_id=client.organization_id, application=client, jti=uuid.UUID(jti)
    ).delete()
    transaction.on_commit(lambda: jti_revoke(jti, expires_at=expires_at))
    event_record(
        organization_id=client.organization_id,
        actor=_client_actor(client),
        action="token.revoked",
        subject_type="token",
        subject_id=jti,
        data={"client_id": client.client_id, "known": bool(deleted)},
    )
    return bool(deleted)


def tokens_follow_agent_status(change: AgentStatusChange) -> None:
    """Lifecycle hook: a decommissioned agent's live tokens join the revocation list.

    Suspension needs no listing: bearer verification refuses tokens of agents that are not
    active, and the agent's status is read in the request's transaction.
    """
    if change.current != AgentStatus.DECOMMISSIONED:
        return
    now = timezone.now()
    live = list(
        AccessToken.objects.filter(
            organization_id=change.organization_id,
            application__agent_id=change.agent_id,
            expires__gt=now,
        ).values_list("jti", "expires")
    )

    def publish() -> None:
        for jti, expires in live:
            jti_revoke(str(jti), expires_at=int(expires.timestamp()))

    transaction.on_commit(publish)


def token_introspect(*, client: Client, token: str) -> dict[str, JSONValue]:
    """RFC 7662 for an authenticated client: active only for a valid, unrevoked token of the
    client's own organization (any audience); anything else is ``{"active": false}``."""
    try:
        verified = access_token_verify(token, any_audience=True)
    except InvalidToken:
        return {"active": False}
    if verified.organization_id != client.organization_id or jti_is_revoked(verified.jti):
        return {"active": False}
    return {"active": True, "token_type": "Bearer", **verified.claims}


def discovery_document() -> dict[str, JSONValue]:
    """RFC 8414 authorization server metadata; ``issuer`` equals the tokens' ``iss``."""
    issuer = agentidp_settings().issuer
    configured = cast(dict[str, str], settings.OAUTH2_PROVIDER["SCOPES"])
    scopes: list[JSONValue] = [str(scope) for scope in sorted(configured)]
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
