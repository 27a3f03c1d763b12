"""Reads about issued tokens that are more than a lookup."""

import uuid
from collections.abc import Collection

from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from oidc.models import AccessToken, RevokedToken


def live_tokens(
    *,
    organization_id: uuid.UUID,
    agent_ids: Collection[uuid.UUID] | None = None,
    credential_ids: Collection[uuid.UUID] | None = None,
) -> QuerySet[AccessToken]:
    """Access tokens of the organization that still work: not expired, not revoked, issued
    after their agent was last suspended (what an action ending them would end), for some
    agents or some secrets."""
    tokens = AccessToken.objects.filter(
        organization_id=organization_id, expires__gt=timezone.now()
    ).exclude(
        Exists(RevokedToken.objects.filter(organization_id=organization_id, jti=OuterRef("jti")))
    )
    tokens = tokens.filter(
        Q(application__agent__tokens_not_before__isnull=True)
        | Q(created__gte=F("application__agent__tokens_not_before"))
    )
    if agent_ids is not None:
        tokens = tokens.filter(application__agent_id__in=list(agent_ids))
    if credential_ids is not None:
        tokens = tokens.filter(credential_id__in=list(credential_ids))
    return tokens


def live_tokens_count(
    *,
    organization_id: uuid.UUID,
    agent_ids: Collection[uuid.UUID] | None = None,
    credential_ids: Collection[uuid.UUID] | None = None,
) -> int:
    return live_tokens(
        organization_id=organization_id, agent_ids=agent_ids, credential_ids=credential_ids
    ).count()
