"""Choices for DIDs."""

from django.db import models


class DidKeyStatus(models.TextChoices):
    ACTIVE = "active", "Active (authenticates and asserts)"
    RETIRED = "retired", "Retired (listed until its retention ends)"
