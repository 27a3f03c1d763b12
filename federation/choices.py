"""Choices for federation: a partner's status, and why a partner's token was refused."""

from django.db import models


class PartnerStatus(models.TextChoices):
    """Stored status; a partner past its ``expires_at`` is expired whatever is stored."""

    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"
    EXPIRED = "expired", "Expired"


class KeysFetchResult(models.TextChoices):
    """The outcome of the last fetch of a partner's keys."""

    OK = "ok", "OK"
    FAILED = "failed", "Failed"


class Rejection(models.TextChoices):
    """Why a token presented as a partner's was not accepted: stable codes for callers."""

    MALFORMED = "malformed", "Not a compact JWS with JSON header and claims"
    TOKEN_TOO_LARGE = "token_too_large", "Longer than FEDERATION_MAX_TOKEN_BYTES"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm", "alg none, HS*, or not on the allow-list"
    FORBIDDEN_HEADER = "forbidden_header", "jku, x5u, jwk, x5c or crit in the header"
    BAD_TYPE = "bad_type", "typ is not at+jwt or JWT"
    UNKNOWN_ISSUER = "unknown_issuer", "No partner of this organization has this issuer"
    PARTNER_SUSPENDED = "partner_suspended", "The partner is suspended"
    PARTNER_EXPIRED = "partner_expired", "The partner's trust has expired"
    JWKS_UNAVAILABLE = "jwks_unavailable", "The partner's keys cannot be fetched and none is cached"
    UNKNOWN_KID = "unknown_kid", "No key of the partner has this kid"
    BAD_SIGNATURE = "bad_signature", "The signature does not verify with the partner's key"
    MISSING_CLAIM = (
        "missing_claim",
        "A required claim (iss, sub, exp, iat; jti to exchange) is missing",
    )
    EXPIRED = "expired", "Past exp (with the leeway)"
    NOT_YET_VALID = "not_yet_valid", "Before nbf, or iat in the future (with the leeway)"
    AUDIENCE_MISMATCH = "audience_mismatch", "aud does not name this deployment"
    ORGANIZATION_NOT_ALLOWED = "organization_not_allowed", "organization_id not in the allow-list"
    REPLAYED = "replayed", "The assertion's jti was already exchanged"
    SCOPE_NOT_ALLOWED = "scope_not_allowed", "No requested scope is within the partner's cap"
