"""Reads of federation that cross or precede an organization."""

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from agentidp.conf import agentidp_settings
from agentidp.tenancy import platform_context, tenant_context
from agentidp.trust import DelegationTrust
from compliance.models import AuditEvent
from federation.choices import PartnerStatus
from federation.models import FederationPartner
from webhooks.choices import EventType


def issuer_organizations(issuer: str) -> list[uuid.UUID]:
    """The organizations with a partner of ``issuer``, for the token endpoint, where no
    organization is known before the assertion is read. ``federation_issuer_organizations``
    (SECURITY DEFINER, like the client lookup) reveals only that; the partner itself is then
    read in each organization, under RLS."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT federation_issuer_organizations(%s)", [issuer[:2048]])
        return [row[0] for row in cursor.fetchall() if row[0] is not None]


def partner_list(*, organization_id: uuid.UUID) -> QuerySet[FederationPartner]:
    return FederationPartner.objects.filter(organization_id=organization_id).order_by("created_at")


def organizations_with_partners(*, reason: str) -> list[str]:
    """Organizations that have partners, for the beat job (across tenants, under ``reason``)."""
    with platform_context(reason=reason):
        ids = FederationPartner.objects.values_list("organization_id", flat=True).distinct()
        return sorted(str(organization_id) for organization_id in ids)


def exchanged_tokens_live(*, organization_id: uuid.UUID, partner_id: uuid.UUID) -> int:
    """Local tokens issued for the partner's assertions that may still be live: those issued
    within the longest lifetime an exchanged token can have (each is recorded as
    ``token.issued`` naming the partner; the tokens themselves are not stored)."""
    horizon = min(
        int(settings.AGENTIDP["FEDERATION_TOKEN_LIFETIME_SECONDS"]),
        int(settings.AGENTIDP["ACCESS_TOKEN_MAX_LIFETIME"]),
    )
    return AuditEvent.objects.filter(
        organization_id=organization_id,
        action=EventType.TOKEN_ISSUED,
        occurred_at__gte=timezone.now() - timedelta(seconds=horizon),
        data__partner_id=str(partner_id),
    ).count()


def local_delegation_trust(
    subject_organization: uuid.UUID, actor_organization: uuid.UUID
) -> DelegationTrust | None:
    """``subject_organization``'s active partner entry for this deployment's own issuer that
    allows delegation and lists ``actor_organization`` (or lists none: every organization),
    read in ``subject_organization``."""
    if subject_organization == actor_organization:
        return None
    with tenant_context(subject_organization):
        partner = (
            FederationPartner.objects.filter(
                organization_id=subject_organization,
                issuer=agentidp_settings().issuer,
                allow_delegation=True,
            )
            .only("status", "expires_at", "allowed_organizations", "allowed_scopes")
            .first()
        )
    if partner is None or partner.effective_status() != PartnerStatus.ACTIVE:
        return None
    allowed = partner.allowed_organizations
    if allowed and str(actor_organization) not in allowed:
        return None
    return DelegationTrust(scopes=frozenset(partner.allowed_scopes))
