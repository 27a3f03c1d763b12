"""Signed assertions are single use: a ``jti`` spent once per issuer across the whole
deployment, durably (a database row, so a Redis restart forgets nothing), until the assertion
expires. Used by the JWT bearer grant and token exchange of partners' tokens.

The record is deployment-wide, not an organization's: an assertion exchanged into organization
A is refused in organization B too, when both trust its issuer. The application role reaches it
only through ``oidc_assertion_spend`` (migration ``oidc/0010``), which reveals whether this use
is the first and nothing else; the spend is part of the caller's transaction, so a request
that fails after it (and rolls back) has not used the assertion up.
"""

import hashlib
from datetime import datetime

from django.db import connection


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def assertion_spend(*, issuer: str, jti: str, expires_at: datetime) -> bool:
    """Spend the assertion ``jti`` of ``issuer``; False when it was spent before (and has not
    expired since)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT oidc_assertion_spend(%s, %s, %s)", [_sha256(issuer), _sha256(jti), expires_at]
        )
        row = cursor.fetchone()
    return bool(row and row[0])


def assertion_uses_purge() -> int:
    """Forget spent assertions that have expired; how many."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT oidc_assertion_uses_purge()")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def assertion_jti_digest(jti: str) -> str:
    """The hashed ``jti`` as audit events record it (never the jti itself)."""
    return _sha256(jti)
