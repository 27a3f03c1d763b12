"""Every write and rule of federation: partners (registered only after their metadata and keys
check out), verification of their tokens, and the exchange of a verified assertion for a local
access token.

Verification (:func:`partner_token_check`) is shared by ``POST /federation/verify`` and the
token endpoint's JWT bearer and token exchange grants; the rules themselves are in
:mod:`federation.verification`, the keys in :mod:`federation.keys`.
"""

import datetime as dt
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from prometheus_client import Counter
from redis import RedisError

from agentidp.boundary import text_refusal
from agentidp.conf import agentidp_settings
from agentidp.errors import Conflict, JSONValue, NotFound, ValidationFailed
from agentidp.events import event_record
from agentidp.outbound import UrlRefused, url_parse
from agentidp.principals import Principal
from did.web import InvalidDid, url_for_did
from federation.choices import PartnerStatus, Rejection
from federation.fetch import FetchFailed, did_keys_check, jwks_fetch, metadata_discover, same_host
from federation.keys import (
    keys_for,
    keys_forget,
    keys_refresh,
    keys_stale,
    keys_store,
    local_jwks_uri,
    local_keys,
)
from federation.models import FederationPartner, PartnerResource
from federation.verification import (
    ParsedToken,
    Refused,
    candidate_keys,
    claims_check,
    signature_check,
    standing_check,
    token_parse,
)
from oidc.extensions import DELEGATION_CLAIM
from oidc.keys import signing_key_current
from oidc.models import Resource
from oidc.ratelimit import token_request_admit, token_request_refund
from oidc.replay import assertion_jti_digest, assertion_spend
from oidc.resources import grant_scopes_checked, is_platform_audience, resource_get
from oidc.tokens import access_token_sign, api_audience
from oidc.validators import TOKENS_ISSUED
from organizations.choices import AGENT_SCOPES, IDENTITY_SCOPES
from organizations.models import Organization
from webhooks.choices import EventType

VERIFICATIONS = Counter(
    "agentidp_federation_verifications_total",
    "Partner tokens verified, by outcome (valid, or the rejection reason).",
    ["outcome"],
)

FEDERABLE_SCOPES = frozenset(AGENT_SCOPES - IDENTITY_SCOPES)
"""What a partner's agents may be allowed here (never an id_token: they are not our agents)."""
MAX_PARTNERS = 100  # per organization
MAX_ALLOWED_ORGANIZATIONS = 100
MAX_NOTES = 2000
# A federated principal's id (urn:agentidp:federated:<partner>:<sub>) fits an audit actor id.
MAX_REMOTE_SUBJECT = 128
MAX_ASSERTION_LIFETIME = 86400  # an assertion's exp at most this far ahead
PARTNER_UPDATABLE = frozenset(
    {"status", "allowed_organizations", "allowed_scopes", "expires_at", "notes", "read_only",
     "allow_delegation"}
)  # fmt: skip
LOCAL_ONLY = (
    "Only this deployment's own issuer (its other organizations) may be allowed to delegate."
)
METADATA_KEPT = ("issuer", "jwks_uri", "token_endpoint", "grant_types_supported",
                 "id_token_signing_alg_values_supported", "scopes_supported")  # fmt: skip


# --- input rules -----------------------------------------------------------------------------


def _refused(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, errors={field: [message]})


def issuer_checked(value: object) -> str:
    """An issuer identifier: an http(s) URL without query or fragment, compared exactly."""
    if not isinstance(value, str) or not value:
        raise _refused("issuer", "The issuer is required.")
    if text_refusal(value):
        raise _refused("issuer", "The issuer contains a forbidden character.")
    try:
        url_parse(value)
    except UrlRefused as exc:
        raise _refused("issuer", "The issuer must be an http(s) URL.") from exc
    parts = urlsplit(value)
    if parts.query or parts.fragment or "#" in value:
        raise _refused("issuer", "The issuer must have no query or fragment.")
    return value


def _url_checked(value: object, field: str) -> str:
    if not isinstance(value, str) or text_refusal(value):
        raise _refused(field, f"The {field} must be a URL.")
    try:
        url_parse(value)
    except UrlRefused as exc:
        raise _refused(field, f"The {field} must be an http(s) URL.") from exc
    return value


def did_checked(value: object) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or text_refusal(value):
        raise _refused("did", "The DID must be a did:web identifier.")
    try:
        url_for_did(value)
    except InvalidDid as exc:
        raise _refused("did", "The DID must be a did:web identifier.") from exc
    return value


def scopes_checked(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _refused("allowed_scopes", "A list of scope names.")
    unknown = sorted(set(value) - FEDERABLE_SCOPES)
    if unknown:
        raise _refused(
            "allowed_scopes",
            f"Not scopes a partner's agents may hold: {', '.join(s[:50] for s in unknown[:5])}.",
        )
    return sorted(set(value))


def organizations_checked(value: object) -> list[str]:
    """The partner's organization ids accepted (opaque strings: any issuer's ids)."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _refused("allowed_organizations", "A list of the partner's organization ids.")
    if len(value) > MAX_ALLOWED_ORGANIZATIONS:
        raise _refused("allowed_organizations", f"At most {MAX_ALLOWED_ORGANIZATIONS} entries.")
    for item in value:
        if not item or len(item) > 200 or text_refusal(item):
            raise _refused("allowed_organizations", "Each entry: 1 to 200 plain characters.")
    return sorted(set(value))


def expires_checked(value: object) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime) or timezone.is_naive(value):
        raise _refused("expires_at", "A date and time with a time zone.")
    if value <= timezone.now():
        raise _refused("expires_at", "Must be in the future.")
    return value


def notes_checked(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_NOTES or text_refusal(value):
        raise _refused("notes", f"Plain text of at most {MAX_NOTES} characters.")
    return value


# --- partners --------------------------------------------------------------------------------


def partner_get(
    *, organization_id: uuid.UUID, partner_id: uuid.UUID, for_update: bool = False
) -> FederationPartner:
    """The organization's partner; another organization's is the same 404."""
    partners = FederationPartner.objects.filter(organization_id=organization_id, id=partner_id)
    if for_update:
        partners = partners.select_for_update()
    partner = partners.first()
    if partner is None:
        raise NotFound("No such federation partner.")
    return partner


def _partner_data(partner: FederationPartner) -> dict[str, JSONValue]:
    return {
        "issuer": partner.issuer,
        "jwks_uri": partner.jwks_uri,
        "did": partner.did,
        "allowed_organizations": list(partner.allowed_organizations),
        "allowed_scopes": list(partner.allowed_scopes),
        "read_only": partner.read_only,
        "allow_delegation": partner.allow_delegation,
        "status": partner.effective_status(),
        "expires_at": partner.expires_at.isoformat() if partner.expires_at else None,
    }


def _fetched(failure: FetchFailed) -> ValidationFailed:
    return _refused(failure.field, failure.detail)


def partner_register(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    issuer: str,
    allowed_scopes: Sequence[str],
    jwks_uri: str = "",
    did: str = "",
    allowed_organizations: Sequence[str] = (),
    expires_at: dt.datetime | None = None,
    notes: str = "",
    read_only: bool = True,
    jwks_uri_other_host: bool = False,
    allow_delegation: bool = False,
) -> FederationPartner:
    """Trust ``issuer`` after fetching and checking its metadata, its JWKS and (given) its DID
    document. Anything unreachable, invalid or inconsistent refuses the registration with the
    field it concerns, and nothing is stored.

    This deployment's own issuer is a partner too (its other organizations, listed in
    ``allowed_organizations``): nothing is fetched, its keys are the deployment's own, and
    only such a partner may ``allow_delegation`` (their agents acting for this
    organization's, ``oidc.delegation``)."""
    issuer = issuer_checked(issuer)
    scopes = scopes_checked(list(allowed_scopes))
    organizations = organizations_checked(list(allowed_organizations))
    expires = expires_checked(expires_at)
    notes = notes_checked(notes)
    did = did_checked(did)
    if not all(isinstance(f, bool) for f in (read_only, jwks_uri_other_host, allow_delegation)):
        raise ValidationFailed("Flags must be booleans.")
    local = issuer == agentidp_settings().issuer
    if allow_delegation and not local:
        raise _refused("allow_delegation", LOCAL_ONLY)
    existing = FederationPartner.objects.filter(organization_id=organization_id)
    if existing.filter(issuer=issuer).exists():
        raise Conflict(
            "This issuer is already a partner.", errors={"issuer": ["Already a partner."]}
        )
    if existing.count() >= MAX_PARTNERS:
        raise Conflict(f"An organization may have at most {MAX_PARTNERS} partners.")
    if local:
        if did or jwks_uri:
            raise _refused("issuer", "This deployment's own keys are used: no jwks_uri or did.")
        metadata: dict[str, JSONValue] = {"issuer": issuer}
        jwks_uri, keys = local_jwks_uri(), local_keys()
    else:
        metadata, jwks_uri, keys = _remote_keys(issuer, jwks_uri, did, jwks_uri_other_host)
    now = timezone.now()
    kept: dict[str, JSONValue] = {k: metadata[k] for k in METADATA_KEPT if k in metadata}
    try:
        with transaction.atomic():
            partner = FederationPartner.objects.create(
                organization_id=organization_id, issuer=issuer, jwks_uri=jwks_uri, did=did,
                allowed_organizations=organizations, allowed_scopes=scopes, read_only=read_only,
                expires_at=expires, jwks_uri_other_host=jwks_uri_other_host,
                allow_delegation=allow_delegation,
                created_by=actor.id[:200], notes=notes, metadata=kept, jwks={"keys": list(keys)},
                keys_fetched_at=now, last_fetch_at=now, last_fetch_result="ok",
            )  # fmt: skip
            event_record(
                organization_id=organization_id, actor=actor,
                action=EventType.FEDERATION_PARTNER_ADDED, subject_type="federation_partner",
                subject_id=str(partner.id), data=_partner_data(partner),
            )  # fmt: skip
    except IntegrityError as exc:  # a concurrent registration of the same issuer
        raise Conflict(
            "This issuer is already a partner.", errors={"issuer": ["Already a partner."]}
        ) from exc
    # Cached at once (a rolled-back registration leaves only an entry no partner id names).
    keys_store(partner.id, list(keys), now.timestamp())
    return partner


def _remote_keys(
    issuer: str, jwks_uri: str, did: str, jwks_uri_other_host: bool
) -> tuple[dict[str, JSONValue], str, list[dict[str, JSONValue]]]:
    """A remote issuer's metadata, its jwks_uri and its keys (checked against its DID)."""
    try:
        metadata = metadata_discover(issuer)
    except FetchFailed as failure:
        raise _fetched(failure) from failure
    if jwks_uri:
        jwks_uri = _url_checked(jwks_uri, "jwks_uri")
    else:
        discovered = metadata.get("jwks_uri")
        if not isinstance(discovered, str):
            raise _refused("jwks_uri", "The issuer's metadata names no jwks_uri.")
        jwks_uri = _url_checked(discovered, "jwks_uri")
    if not jwks_uri_other_host and not same_host(jwks_uri, issuer):
        raise _refused(
            "jwks_uri",
            "The jwks_uri is on another host than the issuer "
            "(set jwks_uri_other_host to allow it).",
        )
    try:
        keys = jwks_fetch(jwks_uri)
        if did:
            did_keys_check(did, issuer, keys)
    except FetchFailed as failure:
        raise _fetched(failure) from failure
    return metadata, jwks_uri, list(keys)


@transaction.atomic
def partner_update(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    partner_id: uuid.UUID,
    changes: Mapping[str, object],
) -> FederationPartner:
    """Suspend or reactivate a partner, or change its limits, expiry, notes or read-only flag.
    A partner may be made active only with an expiry in the future (or none)."""
    unknown = sorted(set(changes) - PARTNER_UPDATABLE)
    if unknown:
        raise ValidationFailed("Unknown fields.", errors={n: ["Unknown field."] for n in unknown})
    partner = partner_get(organization_id=organization_id, partner_id=partner_id, for_update=True)
    before = _partner_data(partner)
    if "allowed_scopes" in changes:
        partner.allowed_scopes = scopes_checked(changes["allowed_scopes"])
    if "allowed_organizations" in changes:
        partner.allowed_organizations = organizations_checked(changes["allowed_organizations"])
    if "expires_at" in changes:
        partner.expires_at = expires_checked(changes["expires_at"])
    if "notes" in changes:
        partner.notes = notes_checked(changes["notes"])
    if "read_only" in changes:
        if not isinstance(changes["read_only"], bool):
            raise _refused("read_only", "A boolean.")
        partner.read_only = changes["read_only"]
    if "allow_delegation" in changes:
        allow = changes["allow_delegation"]
        if not isinstance(allow, bool):
            raise _refused("allow_delegation", "A boolean.")
        if allow and not partner.is_local:
            raise _refused("allow_delegation", LOCAL_ONLY)
        partner.allow_delegation = allow
    if "status" in changes:
        status = changes["status"]
        if status not in (PartnerStatus.ACTIVE, PartnerStatus.SUSPENDED):
            raise _refused("status", "active or suspended (expiry follows expires_at).")
        partner.status = str(status)
    if (
        partner.status == PartnerStatus.EXPIRED
        and "expires_at" in changes
        and "status" not in changes
    ):
        partner.status = PartnerStatus.ACTIVE  # a new expiry renews an expired partner
    if (
        partner.status == PartnerStatus.ACTIVE
        and partner.effective_status() == PartnerStatus.EXPIRED
    ):
        raise _refused("expires_at", "An active partner needs an expiry in the future (or none).")
    partner.save()
    after = _partner_data(partner)
    changed: dict[str, JSONValue] = {
        name: {"from": before[name], "to": after[name]}
        for name in after
        if before[name] != after[name]
    }
    event_record(
        organization_id=organization_id, actor=actor,
        action=EventType.FEDERATION_PARTNER_UPDATED, subject_type="federation_partner",
        subject_id=str(partner.id), data={"issuer": partner.issuer, "changes": changed},
    )  # fmt: skip
    return partner


@transaction.atomic
def partner_delete(*, actor: Principal, organization_id: uuid.UUID, partner_id: uuid.UUID) -> None:
    """Stop trusting the partner: its tokens are refused, and so are the local tokens already
    exchanged for them (their standing names the partner)."""
    partner = partner_get(organization_id=organization_id, partner_id=partner_id, for_update=True)
    partner.delete()
    event_record(
        organization_id=organization_id, actor=actor,
        action=EventType.FEDERATION_PARTNER_REMOVED, subject_type="federation_partner",
        subject_id=str(partner_id), data={"issuer": partner.issuer},
    )  # fmt: skip
    transaction.on_commit(partial(keys_forget, partner_id))


def partner_resources(
    *, organization_id: uuid.UUID, partner_id: uuid.UUID
) -> QuerySet[PartnerResource]:
    """The organization's resources shared with the partner (404 for another's partner)."""
    partner_get(organization_id=organization_id, partner_id=partner_id)
    return PartnerResource.objects.filter(
        organization_id=organization_id, partner_id=partner_id
    ).select_related("resource")


@transaction.atomic
def partner_resource_set(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    partner_id: uuid.UUID,
    resource_id: uuid.UUID,
    scopes: object,
) -> PartnerResource | None:
    """Share one of the organization's registered resources with the partner: its agents may
    exchange their tokens for one naming the resource, with at most ``scopes`` (the resource's
    own). An empty list ends the share (``None``). A resource that requires DPoP cannot be
    shared: a partner's grant issues bearer tokens only."""
    partner = partner_get(organization_id=organization_id, partner_id=partner_id, for_update=True)
    resource = resource_get(organization_id=organization_id, resource_id=resource_id)
    granted = grant_scopes_checked(resource, scopes)
    if granted and resource.dpop_required:
        raise ValidationFailed(
            "This resource requires DPoP; a partner's token exchange issues bearer tokens only.",
            errors={"scopes": ["The resource requires DPoP-bound tokens."]},
        )
    shares = PartnerResource.objects.filter(
        organization_id=organization_id, partner=partner, resource=resource
    )
    share = shares.select_for_update().first()
    if not granted:
        if share is None:
            return None
        share.delete()
    elif share is None:
        share = PartnerResource.objects.create(
            organization_id=organization_id, partner=partner, resource=resource,
            scopes=granted, created_by=actor.id[:200],
        )  # fmt: skip
    elif share.scopes != granted:
        share.scopes = granted
        share.save(update_fields=["scopes", "updated_at"])
    event_record(
        organization_id=organization_id, actor=actor,
        action=EventType.FEDERATION_RESOURCE_SHARED, subject_type="federation_partner",
        subject_id=str(partner.id),
        data={"issuer": partner.issuer, "resource": resource.identifier,
              "resource_id": str(resource.id), "scopes": list[JSONValue](granted)},
    )  # fmt: skip
    return share if granted else None


def shared_target(
    partner: FederationPartner, *, organization_id: uuid.UUID, audiences: Sequence[str]
) -> tuple[Resource, list[str]] | None:
    """The resource a partner's exchange names and the scopes shared of it, or None for the
    platform API; ``ExchangeRefused`` (``invalid_target``) for anything not shared."""
    if is_platform_audience(audiences):
        return None
    share = (
        PartnerResource.objects.filter(
            organization_id=organization_id, partner=partner,
            resource__identifier=audiences[0],
        ).select_related("resource").first()
        if len(audiences) == 1 else None
    )  # fmt: skip
    if share is None:
        raise ExchangeRefused(
            "invalid_target",
            "A partner's token is exchanged for the platform API "
            f"({api_audience()}) or a resource the organization shared with this partner.",
        )
    if share.resource.dpop_required:
        # required after it was shared: a partner's exchange cannot bind a token to a key
        raise ExchangeRefused(
            "invalid_request",
            "This resource requires DPoP-bound tokens; a partner's exchange issues bearer "
            "tokens only.",
        )
    return share.resource, list(share.scopes)


def partner_keys_refresh(*, organization_id: uuid.UUID, partner_id: uuid.UUID) -> FederationPartner:
    """Fetch the partner's keys now (the admin's and the API's "refetch keys"); a failure is
    recorded on the partner and the cached keys stay until their TTL."""
    partner = partner_get(organization_id=organization_id, partner_id=partner_id)
    try:
        keys_refresh(partner)
    except FetchFailed as failure:
        raise ValidationFailed(
            f"The partner's keys could not be refreshed: {failure.detail}",
            errors={failure.field: [failure.detail]},
        ) from failure
    return partner


# --- verification ----------------------------------------------------------------------------


def deployment_audiences() -> frozenset[str]:
    """What a partner's token must name in ``aud`` to be meant for this deployment: its issuer,
    or its token endpoint (RFC 7523 3)."""
    issuer = agentidp_settings().issuer
    return frozenset({issuer, f"{issuer}/oauth2/token"})


def _leeway() -> int:
    return int(settings.AGENTIDP["FEDERATION_LEEWAY_SECONDS"])


@dataclass(frozen=True)
class Verified:
    """A partner's token whose every check passed."""

    partner: FederationPartner
    header: dict[str, JSONValue]
    claims: dict[str, JSONValue]

    @property
    def subject(self) -> str:
        return str(self.claims["sub"])


@dataclass
class Check:
    """The outcome of one verification: ``verified``, or ``reason`` and what was known."""

    verified: Verified | None = None
    reason: Rejection | None = None
    detail: str = ""
    partner: FederationPartner | None = None
    parsed: ParsedToken | None = field(default=None, repr=False)


def token_parsed(token: str) -> ParsedToken:
    return token_parse(token, max_bytes=int(settings.AGENTIDP["FEDERATION_MAX_TOKEN_BYTES"]))


def partner_token_check(
    *, organization_id: uuid.UUID, token: str, parsed: ParsedToken | None = None
) -> Check:
    """Verify that an active partner of ``organization_id`` issued ``token`` for this
    deployment; every failure is a :class:`Rejection`, never an exception."""
    check = Check()
    try:
        check.parsed = parsed or token_parsed(token)
        # The keys come from the cache; the stored copies (JSON) are read only if Redis is down.
        found = FederationPartner.objects.filter(
            organization_id=organization_id, issuer=check.parsed.issuer
        ).defer("metadata", "jwks")
        partner = next(iter(found.order_by()[:1]), None)
        if partner is None:
            raise Refused(Rejection.UNKNOWN_ISSUER)
        check.partner = partner
        standing_check(partner.effective_status())
        candidates = candidate_keys(check.parsed, keys_for(partner, check.parsed.kid).keys)
        if candidates is None:
            raise Refused(Rejection.UNKNOWN_KID)
        signature_check(check.parsed, candidates)
        claims_check(
            check.parsed.claims,
            audiences=deployment_audiences(),
            leeway=_leeway(),
            allowed_organizations=partner.allowed_organizations,
        )
    except Refused as refused:
        check.reason, check.detail = refused.reason, refused.detail
        VERIFICATIONS.labels(outcome=refused.reason.value).inc()
        return check
    VERIFICATIONS.labels(outcome="valid").inc()
    check.verified = Verified(
        partner=partner, header=check.parsed.header, claims=check.parsed.claims
    )
    return check


def _check_data(check: Check) -> dict[str, JSONValue]:
    """What the audit log keeps of a verification: who vouched for whom, never the token."""
    claims = check.parsed.claims if check.parsed else {}
    data: dict[str, JSONValue] = {
        "issuer": str(claims.get("iss", ""))[:200],
        "partner_id": str(check.partner.id) if check.partner else None,
        "sub": str(claims.get("sub", ""))[:200],
        "kid": str(check.parsed.kid or "")[:200] if check.parsed else "",
    }
    if check.reason is not None:
        data["reason"] = check.reason.value
    return data


def partner_token_verify(*, actor: Principal, organization_id: uuid.UUID, token: str) -> Check:
    """``POST /federation/verify``: the check, audited as ``federation.verified`` or
    ``federation.rejected`` with its reason."""
    check = partner_token_check(organization_id=organization_id, token=token)
    event_record(
        organization_id=organization_id,
        actor=actor,
        action=EventType.FEDERATION_VERIFIED if check.verified else EventType.FEDERATION_REJECTED,
        subject_type="federation_partner",
        subject_id=str(check.partner.id) if check.partner else "",
        data=_check_data(check),
        outcome="success" if check.verified else "failure",
    )
    return check


# --- exchange --------------------------------------------------------------------------------


class ExchangeRefused(Exception):
    """An assertion that yields no token: an OAuth ``error`` and its description."""

    def __init__(
        self, error: str, description: str, *, status: int = 400, retry_after: int = 0
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Exchanged:
    """A local access token issued for a partner's verified assertion."""

    access_token: str
    expires_in: int
    scope: str
    claims: dict[str, JSONValue]


def federated_subject(partner_id: uuid.UUID, remote_subject: str) -> str:
    """The ``sub`` of a federated principal here: never mistaken for one of our agents."""
    return f"urn:agentidp:federated:{partner_id}:{remote_subject}"


def federated_actor(*, organization_id: uuid.UUID, subject: str) -> Principal:
    return Principal(kind="federated", id=subject[:200], organization_id=organization_id)


def _scopes_granted(
    requested: str | None, check: Verified, *, cap: Sequence[str] | None = None
) -> list[str]:
    """The intersection of what was asked (the ``scope`` parameter, else the assertion's own
    ``scope``, else everything allowed) and the cap: the partner's allowed scopes, or for a
    shared resource the scopes shared of it."""
    allowed = set(check.partner.allowed_scopes if cap is None else cap)
    if cap is not None:
        # a resource's scopes are granted only as far as the partner's own token vouches
        vouched = check.claims.get("scope")
        allowed &= set(vouched.split()) if isinstance(vouched, str) else set()
    if requested is not None:
        asked = set(requested.split(" "))
        if "" in asked or len(asked) != len(requested.split(" ")):
            raise ExchangeRefused("invalid_scope", "The scope parameter is malformed.")
    elif isinstance(check.claims.get("scope"), str):
        asked = set(str(check.claims["scope"]).split())
    else:
        asked = allowed
    granted = sorted(asked & allowed)
    if not granted:
        raise ExchangeRefused(
            "invalid_scope",
            f"{Rejection.SCOPE_NOT_ALLOWED.value}: no requested scope is allowed for this partner.",
        )
    return granted


def _lifetime(check: Verified, now: float) -> int:
    exp = float(str(check.claims["exp"]))
    limits = [
        int(settings.AGENTIDP["FEDERATION_TOKEN_LIFETIME_SECONDS"]),
        int(settings.AGENTIDP["ACCESS_TOKEN_MAX_LIFETIME"]),
        int(exp - now),
    ]
    if check.partner.expires_at is not None:
        limits.append(int(check.partner.expires_at.timestamp() - now))
    return min(limits)


def _assertion_once(check: Verified) -> str:
    """Spend the assertion's ``jti`` for its issuer, deployment-wide, until it expires
    (:mod:`oidc.replay`); a second use, in this organization or any other, is ``replayed``.
    Returns the jti's digest, for the audit record."""
    jti = check.claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise ExchangeRefused(
            "invalid_grant", f"{Rejection.MISSING_CLAIM.value}: an assertion needs a jti."
        )
    expires = dt.datetime.fromtimestamp(float(str(check.claims["exp"])) + _leeway(), tz=dt.UTC)
    if not assertion_spend(issuer=check.partner.issuer, jti=jti, expires_at=expires):
        raise ExchangeRefused(
            "invalid_grant", f"{Rejection.REPLAYED.value}: this assertion was already used."
        )
    return assertion_jti_digest(jti)


def assertion_exchange(
    *,
    organization_id: uuid.UUID,
    check: Check,
    grant_type: str,
    scope: str | None,
    audiences: Sequence[str],
) -> Exchanged:
    """A short-lived access token of ``organization_id`` for the verified assertion of
    ``check``: ``sub`` the federated principal, ``act`` the partner's agent (RFC 8693 4.1),
    the scopes within the partner's cap, audited as ``token.issued`` naming the partner.
    Raises :class:`ExchangeRefused`."""
    verified = check.verified
    if verified is None:
        assert check.reason is not None  # noqa: S101 - a check has one or the other
        if check.reason == Rejection.JWKS_UNAVAILABLE:
            raise ExchangeRefused(
                "temporarily_unavailable",
                f"{check.reason.value}: the partner's keys cannot be fetched now; retry shortly.",
                status=503,
                retry_after=5,
            )
        raise ExchangeRefused("invalid_grant", f"{check.reason.value}: {check.detail}")
    if len(verified.subject) > MAX_REMOTE_SUBJECT:
        raise ExchangeRefused(
            "invalid_grant",
            f"{Rejection.MALFORMED.value}: a sub of at most {MAX_REMOTE_SUBJECT} characters.",
        )
    now = time.time()
    if float(str(verified.claims["exp"])) - now > MAX_ASSERTION_LIFETIME:
        # RFC 7523 3: an exp unreasonably far in the future (its jti would be kept as long)
        raise ExchangeRefused(
            "invalid_grant",
            f"{Rejection.MALFORMED.value}: an assertion may live at most "
            f"{MAX_ASSERTION_LIFETIME} seconds.",
        )
    target = shared_target(verified.partner, organization_id=organization_id, audiences=audiences)
    scopes = _scopes_granted(scope, verified, cap=target[1] if target else None)
    lifetime = _lifetime(verified, now)
    if target is not None and target[0].access_token_lifetime:
        lifetime = min(lifetime, target[0].access_token_lifetime)
    if lifetime <= 0:
        raise ExchangeRefused(
            "invalid_grant", f"{Rejection.EXPIRED.value}: the assertion has expired."
        )
    jti_hash = _assertion_once(verified)
    partner = verified.partner
    reserved = _admit(partner, organization_id=organization_id)
    try:
        return _issue(
            verified, organization_id=organization_id, grant_type=grant_type, scopes=scopes,
            lifetime=lifetime, now=now, jti_hash=jti_hash,
            audiences=[target[0].identifier] if target else audiences,
            algorithm=target[0].signing_algorithm if target else None,
        )  # fmt: skip
    except BaseException:
        token_request_refund(reserved)
        raise


def _admit(partner: FederationPartner, *, organization_id: uuid.UUID) -> str:
    """The organization's rate limits and monthly quota, as for its own agents' tokens: the
    partner is one client (``federation:<partner id>``). Without Redis nothing is issued."""
    organization = Organization.objects.only("plan", "max_tokens_per_month").get(id=organization_id)
    try:
        admission = token_request_admit(
            client_id=f"federation:{partner.id}", organization_id=organization_id,
            plan=organization.plan, max_tokens_per_month=organization.max_tokens_per_month,
            credential_id=partner.id,
        )  # fmt: skip
    except RedisError as exc:
        raise ExchangeRefused(
            "temporarily_unavailable",
            "The service cannot issue tokens right now; retry shortly.",
            status=503, retry_after=5,
        ) from exc  # fmt: skip
    if not admission.allowed:
        description = (
            "The organization's monthly token quota is exhausted."
            if admission.limit == "quota"
            else "Too many token requests; slow down."
        )
        raise ExchangeRefused(
            "temporarily_unavailable", description, status=429,
            retry_after=admission.retry_after or 1,
        )  # fmt: skip
    return admission.reserved


def _issue(
    verified: Verified,
    *,
    organization_id: uuid.UUID,
    grant_type: str,
    scopes: list[str],
    lifetime: int,
    audiences: Sequence[str],
    now: float,
    jti_hash: str,
    algorithm: str | None = None,
) -> Exchanged:
    """Sign the local token (with ``algorithm``'s current key: a shared resource's own) and
    record ``token.issued`` naming the partner."""
    partner = verified.partner
    subject = federated_subject(partner.id, verified.subject)
    remote = verified.claims.get("organization_id")
    remote_organization = remote if isinstance(remote, str) else None
    issued_at = int(now)
    aud = list(audiences) or [api_audience()]
    claims: dict[str, JSONValue] = {
        "iss": agentidp_settings().issuer,
        "sub": subject,
        "aud": aud[0] if len(aud) == 1 else list(aud),
        "exp": issued_at + lifetime,
        "iat": issued_at,
        "nbf": issued_at,
        "jti": str(uuid.uuid4()),
        "client_id": f"federation:{partner.id}",
        "scope": " ".join(scopes),
        "organization_id": str(organization_id),
        "act": {"iss": partner.issuer, "sub": verified.subject},
        DELEGATION_CLAIM: {
            "partner_id": str(partner.id),
            "issuer": partner.issuer,
            "organization_id": remote_organization,
        },
    }
    token = access_token_sign(claims, signing_key_current(algorithm))
    event_record(
        organization_id=organization_id,
        actor=federated_actor(organization_id=organization_id, subject=subject),
        action=EventType.TOKEN_ISSUED,
        subject_type="token",
        subject_id=str(claims["jti"]),
        data={
            "client_id": str(claims["client_id"]),
            "scope": str(claims["scope"]),
            "aud": list(aud),
            "federated": True,
            "grant_type": grant_type,
            "partner_id": str(partner.id),
            "partner_issuer": partner.issuer,
            "remote_sub": verified.subject[:200],
            "remote_organization_id": remote_organization,
            "read_only": partner.read_only,
            "assertion_jti_sha256": jti_hash,
        },
    )
    transaction.on_commit(TOKENS_ISSUED.inc)
    return Exchanged(
        access_token=token, expires_in=lifetime, scope=str(claims["scope"]), claims=claims
    )


def exchange_rejection_data(check: Check | None, grant_type: str) -> dict[str, JSONValue]:
    data = _check_data(check) if check is not None else {}
    data["grant_type"] = grant_type
    return data


# --- upkeep ----------------------------------------------------------------------------------


def partners_maintain(*, organization_id: uuid.UUID, actor: Principal) -> dict[str, int]:
    """The beat job's work for one organization: mark partners past ``expires_at`` expired
    (with ``federation.partner_updated``) and refresh keys past half their TTL (spent
    assertions are forgotten deployment-wide: ``oidc.replay``)."""
    now = timezone.now()
    expired = refreshed = failed = 0
    partners = FederationPartner.objects.filter(organization_id=organization_id)
    for partner in partners.filter(status=PartnerStatus.ACTIVE, expires_at__lte=now):
        with transaction.atomic():
            FederationPartner.objects.filter(id=partner.id, organization_id=organization_id).update(
                status=PartnerStatus.EXPIRED, updated_at=now
            )
            event_record(
                organization_id=organization_id, actor=actor,
                action=EventType.FEDERATION_PARTNER_UPDATED, subject_type="federation_partner",
                subject_id=str(partner.id),
                data={"issuer": partner.issuer,
                      "changes": {"status": {"from": PartnerStatus.ACTIVE, "to": PartnerStatus.EXPIRED}}},
            )  # fmt: skip
        expired += 1
    for partner in partners.filter(status=PartnerStatus.ACTIVE):
        if partner.effective_status(now) != PartnerStatus.ACTIVE or not keys_stale(
            partner, now=now
        ):
            continue
        try:
            keys_refresh(partner)
            refreshed += 1
        except FetchFailed:
            failed += 1
    return {"expired": expired, "refreshed": refreshed, "failed": failed}
