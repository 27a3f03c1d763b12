"""Who may act for whom across organizations: the one question the delegation code below
federation asks of it.

Token exchange (``oidc.delegation``) and delegation policies (``agents``) sit below
``federation`` and may not import it; federation registers the answer here when it loads.
Without a registered answer no organization trusts another.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class DelegationTrust:
    """An organization's trust in another organization's agents acting for its own: the most
    a token they are handed may hold (its partner entry's ``allowed_scopes``)."""

    scopes: frozenset[str]


# (the organization whose agent is acted for, the acting agent's organization) -> the trust
TrustResolver = Callable[[uuid.UUID, uuid.UUID], DelegationTrust | None]
_resolvers: list[TrustResolver] = []


def delegation_trust_register(resolver: TrustResolver) -> None:
    if resolver not in _resolvers:
        _resolvers.append(resolver)


def delegation_trust(
    subject_organization: uuid.UUID, actor_organization: uuid.UUID
) -> DelegationTrust | None:
    """Whether ``subject_organization`` lets agents of ``actor_organization`` act for its
    agents now, and within what; ``None``: it does not."""
    for resolver in _resolvers:
        trust = resolver(subject_organization, actor_organization)
        if trust is not None:
            return trust
    return None
