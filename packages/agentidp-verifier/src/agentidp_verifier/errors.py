"""Why a token was not accepted, in the terms a resource server answers with (RFC 6750 3.1,
RFC 9449 7.1)."""

INVALID_REQUEST = "invalid_request"
INVALID_TOKEN = "invalid_token"  # noqa: S105 - an error code
INSUFFICIENT_SCOPE = "insufficient_scope"
INVALID_DPOP_PROOF = "invalid_dpop_proof"


class TokenRejected(Exception):
    """The request's token is not accepted: answer ``status`` with a ``WWW-Authenticate``
    challenge carrying ``error`` (empty when the request had no token at all, RFC 6750 3.1)."""

    status = 401

    def __init__(self, error: str, description: str, *, scheme: str = "Bearer") -> None:
        super().__init__(f"{error}: {description}" if error else description)
        self.error = error
        self.description = description
        self.scheme = scheme


class TokenMissing(TokenRejected):
    """The request carried no access token."""

    def __init__(self) -> None:
        super().__init__("", "an access token is required")


class InsufficientScope(TokenRejected):
    """A valid token without the scopes this resource requires."""

    status = 403

    def __init__(self, missing: frozenset[str], *, scheme: str = "Bearer") -> None:
        super().__init__(
            INSUFFICIENT_SCOPE, f"missing scope: {' '.join(sorted(missing))}", scheme=scheme
        )
        self.missing = missing


class MalformedRequest(TokenRejected):
    """An Authorization header that is not one token under one scheme (RFC 6750 3.1)."""

    status = 400

    def __init__(self, description: str) -> None:
        super().__init__(INVALID_REQUEST, description)


class VerifierUnavailable(Exception):
    """The issuer's metadata, keys or status list could not be had: answer 503, not 401, since
    the token may well be good."""
