"""Choices for the authorization server."""

from django.db import models


class KeyStatus(models.TextChoices):
    NEXT = "next", "Next (published, not yet signing)"
    CURRENT = "current", "Current (signing)"
    RETIRED = "retired", "Retired (verifying until its tokens expire)"


class SigningAlgorithm(models.TextChoices):
    ES256 = "ES256", "ES256 (ECDSA P-256)"
    RS256 = "RS256", "RS256 (RSA 2048)"
    EDDSA = "EdDSA", "EdDSA (Ed25519)"
