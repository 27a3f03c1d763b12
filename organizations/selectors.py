"""Reads of organizations."""

from agentidp.errors import NotFound
from organizations.choices import OrganizationStatus
from organizations.models import Organization


def organization_get_by_slug(*, slug: str) -> Organization:
    """Look an organization up by slug; callers without its context use the platform path."""
    organization = (
        Organization.objects.exclude(status=OrganizationStatus.DELETED).filter(slug=slug).first()
    )
    if organization is None:
        raise NotFound(f"No organization with slug {slug!r}.")
    return organization
