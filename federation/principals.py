"""The standing of access tokens exchanged for a partner's assertion (``oidc.extensions``'
delegated resolver): usable while their partner is active, unexpired and still trusted, with
the scopes its cap allows now."""

import datetime as dt
import uuid

from django.db import connection
from django.utils import timezone

from agentidp.principals import Principal
from agentidp.tenancy import organization_applied
from federation.choices import PartnerStatus
from oidc.extensions import DELEGATION_CLAIM
from oidc.tokens import VerifiedToken

# The partner's standing in one round trip, after entering the token's organization (the
# subqueries run after set_config, so RLS sees it).
STANDING_SQL = """
SELECT set_config('app.organization_id', %s, true),
       (SELECT ARRAY[p.status, p.read_only::text, array_to_string(p.allowed_scopes, ' ')]
          FROM federation_federationpartner p WHERE p.id = %s::uuid),
       (SELECT p.expires_at FROM federation_federationpartner p WHERE p.id = %s::uuid)
"""


def federated_principal(verified: VerifiedToken) -> Principal | str:
    """The federated principal of a delegated token, or why it may not be used now."""
    marker = verified.claims.get(DELEGATION_CLAIM)
    partner = marker.get("partner_id") if isinstance(marker, dict) else None
    try:
        partner_id = uuid.UUID(str(partner))
    except ValueError:
        return "claims"
    organization_id = verified.organization_id
    with connection.cursor() as cursor:
        cursor.execute(STANDING_SQL, [str(organization_id), str(partner_id), str(partner_id)])
        row = cursor.fetchone()
    organization_applied(organization_id)
    if row is None or row[1] is None:
        return "partner_removed"
    status, read_only, cap = row[1]
    expires_at: dt.datetime | None = row[2]
    if status != PartnerStatus.ACTIVE or (expires_at is not None and expires_at <= timezone.now()):
        return "partner_inactive"
    return Principal(
        kind="federated",
        id=verified.subject,
        organization_id=organization_id,
        scopes=verified.scopes & frozenset(str(cap).split()),
        display=verified.subject,
        read_only=read_only == "true",
    )
