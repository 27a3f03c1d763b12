"""Reads of organizations."""

import uuid

from agentidp.boundary import slug_refusal
from agentidp.errors import NotFound
from agentidp.tenancy import platform_context
from organizations.choices import OrganizationStatus
from organizations.models import Organization


def organization_get_by_slug(*, slug: str) -> Organization:
    """Look an organization up by slug; callers without its context use the platform path."""
    if slug_refusal(slug):
        raise NotFound(f"No organization with slug {slug!r}.")
    organization = (
        Organization.objects.exclude(status=OrganizationStatus.DELETED).filter(slug=slug).first()
    )
    if organization is None:
        raise NotFound(f"No organization with slug {slug!r}.")
    return organization


def organization_ids_for_jobs(*, reason: str, include_deleted: bool = False) -> list[str]:
    """Every live organization's id (deleted ones too with ``include_deleted``: their audit
    chains outlive them), for a job fanning out one task per organization.

    Listing organizations crosses tenants, so it goes through the platform context.
    """
    with platform_context(reason=reason):
        organizations = Organization.objects.order_by("created_at", "id")
        if not include_deleted:
            organizations = organizations.exclude(status=OrganizationStatus.DELETED)
        ids = organizations.values_list("id", flat=True)
        return [str(organization_id) for organization_id in ids]


def organization_id_named(key: str, *, reason: str) -> uuid.UUID:
    """A command's ``--org``: an organization by id or slug, deleted ones included (a deleted
    organization's slug is ``deleted-<hex>``, still a valid slug); crosses tenants."""
    with platform_context(reason=reason):
        try:
            found = Organization.objects.filter(id=uuid.UUID(key)).first()
        except ValueError:
            found = None if slug_refusal(key) else Organization.objects.filter(slug=key).first()
    if found is None:
        raise NotFound(f"No organization {key!r}.")
    return found.id
