"""Choices for credentials."""

from django.db import models


class CredentialStatus(models.TextChoices):
    """A client secret's state at a moment (derived from its timestamps, not stored)."""

    ACTIVE = "active", "Active"
    ROTATING = "rotating", "Rotating (in its grace period)"
    EXPIRED = "expired", "Expired"
    REVOKED = "revoked", "Revoked"


class SigningAlgorithm(models.TextChoices):
    """The JWS algorithms the deployment signs with: each has its own signing keys."""

    ES256 = "ES256", "ES256 (ECDSA P-256)"
    RS256 = "RS256", "RS256 (RSA 2048)"
    EDDSA = "EdDSA", "EdDSA (Ed25519)"
