"""Abstract model bases shared by every app."""

from django.db import models


class TimestampedModel(models.Model):
    """Adds creation and last-update timestamps."""

    created_at = models.DateTimeField(auto_now_add=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True, editable=False)

    class Meta:
        abstract = True


class OrgOwnedModel(models.Model):
    """A tenant-owned row: ``organization_id NOT NULL`` and an RLS policy in its migration."""

    organization = models.ForeignKey(
        "organizations.Organization", on_delete=models.PROTECT, related_name="+", editable=False
    )

    class Meta:
        abstract = True
