"""Client secrets: generate, rotate with overlap, revoke; and client authentication.

A secret is 256 random bits shown once. Only ``HMAC-SHA256(server key, secret)`` is kept: a
random 256-bit secret cannot be guessed, so a slow password hash would add nothing but cost on
every token request. That digest is encrypted at rest (:mod:`compliance.encryption`); lookups
compare its keyed blind index instead, so the token endpoint decrypts nothing. Both server keys
live in the secret store, never in the database.
"""

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import cast
from urllib.parse import unquote_plus

from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from agentidp.boundary import text_refusal
from agentidp.errors import Conflict, JSONValue, NotFound, ValidationFailed
from agentidp.events import event_record
from agentidp.lifecycle import AgentStatusChange, CredentialRevocation, credentials_revoked
from agentidp.principals import Principal
from agentidp.secrets import SecretFactory, platform_path, secret_store
from agentidp.usage import last_used_key, redis_client
from agents.choices import AgentStatus
from agents.models import Agent
from agents.services import agent_get
from compliance.encryption import EncryptedColumn, encrypt
from credentials.choices import CredentialStatus, SigningAlgorithm
from credentials.models import Client, ClientSecret
from credentials.records import ClientRecord
from organizations.choices import AGENT_SCOPES, DEFAULT_AGENT_SCOPES, Scope
from organizations.models import Organization
from organizations.services import organization_get

SECRET_PREFIX = "ais_"  # noqa: S105 - the public prefix of issued secrets
DIGEST_COLUMN = EncryptedColumn("credentials.ClientSecret", "digest_ciphertext")


@cache
def _hmac_key() -> bytes:
    """The server key for secret digests, created in the secret store on first use."""
    stored = secret_store().read_or_create(
        platform_path("credential-hmac-key"), SecretFactory(nbytes=32)
    )
    return stored["value"].encode()


@cache
def _index_key() -> bytes:
    """The server key of the digests' blind index (a second key: the index reveals nothing of
    the digest, which is stored only encrypted)."""
    stored = secret_store().read_or_create(
        platform_path("credential-index-key"), SecretFactory(nbytes=32)
    )
    return stored["value"].encode()


def secret_digest(secret: str) -> str:
    """The stored credential digest: HMAC-SHA256 of the secret under the server key."""
    return hmac.new(_hmac_key(), secret.encode(), hashlib.sha256).hexdigest()


def digest_index(digest: str) -> str:
    """The keyed blind index of a digest, what lookups compare (no decryption on the hot path)."""
    return hmac.new(_index_key(), digest.encode(), hashlib.sha256).hexdigest()


def secret_index(secret: str) -> str:
    """What the token endpoint compares with a client's stored secrets: two HMACs."""
    return digest_index(secret_digest(secret))


def _new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def client_get_or_create(*, organization_id: uuid.UUID, agent: Agent) -> Client:
    """The agent's OAuth client; its ``client_id`` is the agent id."""
    client = Client.objects.filter(organization_id=organization_id, agent_id=agent.id).first()
    if client is None:
        client = Client.objects.create(
            organization_id=organization_id,
            agent=agent,
            client_id=str(agent.id),
            name=agent.name[:255],
            client_type=Client.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Client.GRANT_CLIENT_CREDENTIALS,
            client_secret="",
            hash_client_secret=False,
            allowed_scopes=list(DEFAULT_AGENT_SCOPES),
        )
    return client


@dataclass(frozen=True)
class IssuedSecret:
    """A newly issued secret: the stored record and the plaintext, returned exactly once."""

    credential: ClientSecret
    client_id: str
    secret: str


def _issue(*, client: Client, expires_at: datetime | None) -> IssuedSecret:
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationFailed(
            "The expiry must be in the future.", errors={"expires_at": ["Must be in the future."]}
        )
    plaintext = _new_secret()
    digest = secret_digest(plaintext)
    credential = ClientSecret(
        organization_id=client.organization_id,
        client=client,
        prefix=plaintext[:12],
        digest_index=digest_index(digest),
        expires_at=expires_at,
    )
    credential.digest_ciphertext = encrypt(
        digest, organization_id=client.organization_id, column=DIGEST_COLUMN, row_id=credential.id
    )
    credential.save(force_insert=True)
    return IssuedSecret(credential=credential, client_id=client.client_id, secret=plaintext)


def _writable_agent(*, organization_id: uuid.UUID, agent_id: uuid.UUID) -> Agent:
    agent = agent_get(organization_id=organization_id, agent_id=agent_id, for_update=True)
    if agent.status == AgentStatus.DECOMMISSIONED:
        raise Conflict("A decommissioned agent cannot hold credentials.")
    return agent


@transaction.atomic
def credential_generate(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    agent_id: uuid.UUID,
    expires_at: datetime | None = None,
) -> IssuedSecret:
    """Issue a new client secret for the agent (its client is created on first use)."""
    agent = _writable_agent(organization_id=organization_id, agent_id=agent_id)
    client = client_get_or_create(organization_id=organization_id, agent=agent)
    issued = _issue(client=client, expires_at=expires_at)
    event_record(
        organization_id=organization_id,
        actor=actor,
        action="credential.generated",
        subject_type="credential",
        subject_id=str(issued.credential.id),
        data={
            "agent_id": str(agent.id),
            "prefix": issued.credential.prefix,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return issued


def credential_list(*, organization_id: uuid.UUID, agent_id: uuid.UUID) -> list[ClientSecret]:
    """The agent's secrets, newest first, with ``last_used_at`` as fresh as Redis knows it."""
    agent = agent_get(organization_id=organization_id, agent_id=agent_id)
    credentials = list(
        ClientSecret.objects.filter(organization_id=organization_id, client__agent_id=agent.id)
    )
    if credentials:
        used = redis_client().hmget(
            last_used_key(organization_id), [str(c.id) for c in credentials]
        )
        for credential, epoch in zip(credentials, cast(list[bytes | None], used), strict=True):
            if epoch is not None:
                seen = datetime.fromtimestamp(int(epoch), tz=UTC)
                if credential.last_used_at is None or seen > credential.last_used_at:
                    credential.last_used_at = seen
    return credentials


def credential_last_used_persist(*, organization_id: uuid.UUID) -> int:
    """Copy the organization's last-used times from Redis to the table (a beat job's work)."""
    stored = cast(dict[bytes, bytes], redis_client().hgetall(last_used_key(organization_id)))
    updated = 0
    for credential_id, epoch in stored.items():
        seen = datetime.fromtimestamp(int(epoch), tz=UTC)
        updated += (
            ClientSecret.objects.filter(organization_id=organization_id, id=credential_id.decode())
            .exclude(last_used_at__gte=seen)
            .update(last_used_at=seen)
        )
    return updated


def _credential_get(
    *, organization_id: uuid.UUID, agent_id: uuid.UUID, credential_id: uuid.UUID
) -> ClientSecret:
    credential = (
        ClientSecret.objects.select_for_update()
        .filter(organization_id=organization_id, client__agent_id=agent_id, id=credential_id)
        .first()
    )
    if credential is None:
        raise NotFound("No such credential.")
    return credential


MAX_GRACE_SECONDS = 30 * 86400


@transaction.atomic
def credential_rotate(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    agent_id: uuid.UUID,
    credential_id: uuid.UUID,
    grace_seconds: int | None = None,
    expires_at: datetime | None = None,
) -> IssuedSecret:
    """Issue a replacement; the old secret keeps working for the grace period (the
    organization's default when ``None``, at most :data:`MAX_GRACE_SECONDS`), then stops."""
    if grace_seconds is not None and not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise ValidationFailed(
            "The grace period is out of range.",
            errors={"grace_seconds": [f"From 0 to {MAX_GRACE_SECONDS} seconds (30 days)."]},
        )
    agent = _writable_agent(organization_id=organization_id, agent_id=agent_id)
    old = _credential_get(
        organization_id=organization_id, agent_id=agent.id, credential_id=credential_id
    )
    now = timezone.now()
    if old.status_at(now) != CredentialStatus.ACTIVE:
        raise Conflict(
            f"Only an active credential can be rotated; this one is {old.status_at(now).value}."
        )
    if grace_seconds is None:
        grace_seconds = organization_get(organization_id=organization_id).credential_grace_seconds
    grace_end = now + timedelta(seconds=grace_seconds)
    old.rotated_at = now
    old.expires_at = min(old.expires_at, grace_end) if old.expires_at else grace_end
    old.save(update_fields=["rotated_at", "expires_at"])
    issued = _issue(client=old.client, expires_at=expires_at)
    event_record(
        organization_id=organization_id,
        actor=actor,
        action="credential.rotated",
        subject_type="credential",
        subject_id=str(old.id),
        data={
            "agent_id": str(agent.id),
            "replacement_id": str(issued.credential.id),
            "old_expires_at": old.expires_at.isoformat(),
        },
    )
    return issued


@transaction.atomic
def credential_revoke(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    agent_id: uuid.UUID,
    credential_id: uuid.UUID,
    reason: str = "",
) -> ClientSecret:
    """Stop a secret at once (``reason``, when given, is recorded with the event)."""
    agent = agent_get(organization_id=organization_id, agent_id=agent_id)
    credential = _credential_get(
        organization_id=organization_id, agent_id=agent.id, credential_id=credential_id
    )
    if credential.revoked_at is not None:
        raise Conflict("The credential is already revoked.")
    credential.revoked_at = timezone.now()
    credential.save(update_fields=["revoked_at"])
    credentials_revoked(
        CredentialRevocation(
            organization_id=organization_id, credential_ids=(credential.id,), actor=actor
        )
    )
    event_record(
        organization_id=organization_id,
        actor=actor,
        action="credential.revoked",
        subject_type="credential",
        subject_id=str(credential.id),
        data={
            "agent_id": str(agent.id), "prefix": credential.prefix,
            **({"reason": reason} if reason else {}),
        },
    )  # fmt: skip
    return credential


def credentials_expired_revoke(*, actor: Principal) -> dict[str, JSONValue]:
    """Revoke every secret whose expiry (or whose rotation grace) has passed and that nothing
    revoked yet: an expired secret already fails authentication, and revoking it makes that
    final, recorded and visible (``credential.revoked`` with ``reason: expired``). The
    secrets-rotation job calls this in the platform context; ``{organization id: count}``."""
    expired = ClientSecret.objects.filter(revoked_at=None, expires_at__lte=timezone.now())
    revoked: dict[str, int] = {}
    for credential_id, organization_id, agent_id in expired.values_list(
        "id", "organization_id", "client__agent_id"
    ).order_by("organization_id", "expires_at"):
        try:
            credential_revoke(
                actor=actor, organization_id=organization_id, agent_id=agent_id,
                credential_id=credential_id, reason="expired",
            )  # fmt: skip
        except (Conflict, NotFound):
            continue  # revoked or deleted since the query: nothing left to do
        revoked[str(organization_id)] = revoked.get(str(organization_id), 0) + 1
    return dict[str, JSONValue](revoked)


def client_scopes_get(*, organization_id: uuid.UUID, agent_id: uuid.UUID) -> list[str]:
    """The scopes the agent may request; the default before its client exists."""
    agent = agent_get(organization_id=organization_id, agent_id=agent_id)
    client = Client.objects.filter(organization_id=organization_id, agent_id=agent.id).first()
    return list(client.allowed_scopes) if client else list(DEFAULT_AGENT_SCOPES)


@transaction.atomic
def client_scopes_set(
    *, actor: Principal, organization_id: uuid.UUID, agent_id: uuid.UUID, scopes: list[str]
) -> Client:
    """Set the scopes the agent may request (an organization admin's decision)."""
    unknown = sorted(set(scopes) - set(Scope.values))
    if unknown:
        raise ValidationFailed(
            "Unknown scopes.", errors={"scopes": [f"Unknown: {', '.join(unknown)}."]}
        )
    withheld = sorted(set(scopes) - AGENT_SCOPES)
    if withheld:
        raise ValidationFailed(
            f"{', '.join(withheld)}: not for agents.",
            errors={"scopes": [f"Agents cannot hold {', '.join(withheld)}."]},
        )
    agent = _writable_agent(organization_id=organization_id, agent_id=agent_id)
    client = client_get_or_create(organization_id=organization_id, agent=agent)
    client.allowed_scopes = sorted(set(scopes))
    client.save(update_fields=["allowed_scopes"])
    event_record(
        organization_id=organization_id,
        actor=actor,
        action="credential.scopes_changed",
        subject_type="agent",
        subject_id=str(agent.id),
        data={"scopes": [str(s) for s in client.allowed_scopes]},
    )
    return client


@dataclass(frozen=True)
class ClientMetadata:
    """An agent's OAuth client registration as the API shows it."""

    client_id: str
    scopes: list[str]
    id_token_signed_response_alg: str
    userinfo_signed_response_alg: str
    dpop_bound_access_tokens: bool


def _metadata(client: Client) -> ClientMetadata:
    return ClientMetadata(
        client_id=client.client_id,
        scopes=list(client.allowed_scopes),
        id_token_signed_response_alg=client.id_token_signed_response_alg,
        userinfo_signed_response_alg=client.userinfo_signed_response_alg,
        dpop_bound_access_tokens=client.dpop_bound_access_tokens,
    )


def client_metadata_get(*, organization_id: uuid.UUID, agent_id: uuid.UUID) -> ClientMetadata:
    """The agent's client registration; the defaults before its client exists."""
    agent = agent_get(organization_id=organization_id, agent_id=agent_id)
    client = Client.objects.filter(organization_id=organization_id, agent_id=agent.id).first()
    if client is None:
        client = Client(client_id=str(agent.id), allowed_scopes=list(DEFAULT_AGENT_SCOPES))
    return _metadata(client)


@transaction.atomic
def client_metadata_set(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    agent_id: uuid.UUID,
    id_token_signed_response_alg: str | None = None,
    userinfo_signed_response_alg: str | None = None,
    dpop_bound_access_tokens: bool | None = None,
) -> ClientMetadata:
    """Set how the agent's id_tokens are signed (RS256, ES256 or EdDSA), whether
    ``/agent-info`` answers it with a signed JWT (an algorithm) or JSON (``""``), and whether
    it is issued DPoP-bound tokens only (RFC 9449 5.2); ``None`` leaves a setting as it is."""
    errors: dict[str, list[str]] = {}
    allowed = SigningAlgorithm.values
    if id_token_signed_response_alg is not None and id_token_signed_response_alg not in allowed:
        errors["id_token_signed_response_alg"] = [f"One of {', '.join(allowed)}."]
    if userinfo_signed_response_alg not in (None, "", *allowed):
        errors["userinfo_signed_response_alg"] = [f"Empty, or one of {', '.join(allowed)}."]
    if errors:
        raise ValidationFailed("Unsupported signing algorithm.", errors=errors)
    agent = _writable_agent(organization_id=organization_id, agent_id=agent_id)
    client = client_get_or_create(organization_id=organization_id, agent=agent)
    changed: dict[str, JSONValue] = {}
    wanted: dict[str, str | bool | None] = {
        "id_token_signed_response_alg": id_token_signed_response_alg,
        "userinfo_signed_response_alg": userinfo_signed_response_alg,
        "dpop_bound_access_tokens": dpop_bound_access_tokens,
    }
    for name, value in wanted.items():
        if value is not None and getattr(client, name) != value:
            setattr(client, name, value)
            changed[name] = value
    if changed:
        client.save(update_fields=list(changed))
        event_record(
            organization_id=organization_id,
            actor=actor,
            action="credential.client_changed",
            subject_type="agent",
            subject_id=str(agent.id),
            data=changed,
        )
    return _metadata(client)


def credentials_follow_agent_status(change: AgentStatusChange) -> None:
    """Lifecycle hook: decommissioning revokes every secret of the agent."""
    if change.current != AgentStatus.DECOMMISSIONED:
        return
    revoked = ClientSecret.objects.filter(
        organization_id=change.organization_id,
        client__agent_id=change.agent_id,
        revoked_at__isnull=True,
    ).update(revoked_at=timezone.now())
    if revoked:
        event_record(
            organization_id=change.organization_id,
            actor=change.actor,
            action="credential.revoked",
            subject_type="agent",
            subject_id=str(change.agent_id),
            data={"reason": "agent decommissioned", "count": revoked},
        )


# --- client authentication (the token endpoint's hot path) ----------------------------------


@dataclass(frozen=True)
class AuthenticatedClient:
    """A client whose secret matched, with what the token endpoint needs to know."""

    client: Client
    credential_id: uuid.UUID


class ClientAuthenticationFailed(Exception):
    """Why a client could not authenticate; ``reason`` is logged, never shown to the caller."""

    def __init__(self, reason: str, *, organization_id: uuid.UUID | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.organization_id = organization_id


def client_credentials_parse(
    *, authorization: str, form_client_id: str | None, form_secret: str | None
) -> tuple[str, str]:
    """``client_secret_basic`` (RFC 6749 2.3.1: form-encoded parts) or ``client_secret_post``;
    ``("", "")`` when neither is usable (text the boundary refuses included)."""
    if authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        client_id, _, secret = decoded.partition(":")
        client_id, secret = unquote_plus(client_id), unquote_plus(secret)
    else:
        client_id, secret = form_client_id or "", form_secret or ""
    if text_refusal(client_id) or text_refusal(secret):
        return "", ""
    return client_id, secret


def client_record_load(*, client_id: str) -> ClientRecord | None:
    """Read a client by ``client_id`` in one round trip (``credentials_client_load``): it sets
    the client's organization on the current transaction (or, in autocommit, on that one
    statement) and reads through RLS. ``None``: no such client."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM credentials_client_load(%s)", [client_id[:100]])
        row = cursor.fetchone()
    if row is None:
        return None
    return ClientRecord(
        pk=row[0],
        client_id=row[1],
        agent_id=row[2],
        allowed_scopes=tuple(row[3]),
        agent_status=row[4],
        organization_id=row[5],
        organization_status=row[6],
        plan=row[7],
        max_tokens_per_month=row[8],
        access_token_lifetime_seconds=row[9],
        secrets=tuple(
            (uuid.UUID(secret_id), digest, parse_datetime(expires) if expires else None)
            for secret_id, digest, expires in row[10]
        ),
        agent_name=row[11],
        capabilities=tuple(row[12]),
        id_token_signed_response_alg=row[13],
        agent_did=row[14],
        delegation_actors=_actors(row[15]),
        dpop_bound_access_tokens=bool(row[16]),
    )


def _actors(value: object) -> tuple[str, ...]:
    """The agent's delegation actors as the function returns them (JSON, as text here)."""
    loaded = json.loads(value) if isinstance(value, str) else value
    return tuple(str(a) for a in loaded) if isinstance(loaded, list) else ("*",)


def client_load(*, client_id: str) -> Client:
    """Enter the client's organization and read the client with its agent, organization and
    live secrets (:func:`client_record_load`), as the model instances DOT works with. Refuses
    clients that may not authenticate.

    The organization is set on the current transaction; everything read goes through RLS.
    """
    record = client_record_load(client_id=client_id)
    if record is None:
        raise ClientAuthenticationFailed("unknown_client")
    client = Client(
        id=record.pk,
        client_id=record.client_id,
        agent_id=record.agent_id,
        allowed_scopes=list(record.allowed_scopes),
        organization_id=record.organization_id,
        id_token_signed_response_alg=record.id_token_signed_response_alg,
        dpop_bound_access_tokens=record.dpop_bound_access_tokens,
        client_type=Client.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Client.GRANT_CLIENT_CREDENTIALS,
        # DOT's unused plaintext secret column: given, so its default (a 128-character random
        # string drawn per request) is not generated on the hot path.
        client_secret="",
    )
    client._state.adding = False
    client.agent = Agent(id=record.agent_id, organization_id=record.organization_id,
                         status=record.agent_status, name=record.agent_name, did=record.agent_did,
                         capabilities=list(record.capabilities))  # fmt: skip
    client.organization = Organization(
        id=record.organization_id,
        status=record.organization_status,
        plan=record.plan,
        max_tokens_per_month=record.max_tokens_per_month,
        access_token_lifetime_seconds=record.access_token_lifetime_seconds,
    )
    client.record = record
    refusal = record.refusal()
    if refusal:
        raise ClientAuthenticationFailed(refusal, organization_id=record.organization_id)
    return client


def client_secret_check(*, client: Client, secret: str) -> AuthenticatedClient:
    """Compare ``secret`` in constant time with the client's live secrets."""
    credential_id, reason = client.record.secret_check(secret_index(secret), timezone.now())
    if credential_id is None:
        raise ClientAuthenticationFailed(reason, organization_id=client.organization_id)
    return AuthenticatedClient(client=client, credential_id=credential_id)
