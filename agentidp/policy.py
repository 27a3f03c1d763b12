"""The authorization decision for every API action.

One function answers "may this principal do this action on this resource?"; views ask it and
never decide themselves.
"""

from dataclasses import dataclass
from uuid import UUID

from agentidp.principals import Principal


@dataclass(frozen=True)
class Resource:
    """What an action targets: its type and the organization that owns it (if known)."""

    type: str
    organization_id: UUID | None = None


def authorize(principal: Principal, *, action: str, scope: str, resource: Resource) -> bool:
    """Allow when the principal is active, holds ``scope``, and acts within its organization
    (platform principals may act across organizations)."""
    if principal.status != "active":
        return False
    if not principal.has_scope(scope):
        return False
    if resource.organization_id is None or principal.is_platform:
        return True
    return resource.organization_id == principal.organization_id
