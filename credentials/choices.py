"""Choices for credentials."""

from django.db import models


class CredentialStatus(models.TextChoices):
    """A client secret's state at a moment (derived from its timestamps, not stored)."""

    ACTIVE = "active", "Active"
    ROTATING = "rotating", "Rotating (in its grace period)"
    EXPIRED = "expired", "Expired"
    REVOKED = "revoked", "Revoked"
