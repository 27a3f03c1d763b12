"""Access token lifetime per request; imported by settings, so it imports no models."""

from typing import Protocol


class _Organization(Protocol):
    access_token_lifetime_seconds: int


class _Client(Protocol):
    organization: _Organization


class _Request(Protocol):
    client: _Client


def access_token_lifetime(request: _Request) -> int:
    """The client's organization's lifetime, capped by ``AGENTIDP_ACCESS_TOKEN_MAX_LIFETIME``."""
    from django.conf import settings

    cap = int(settings.AGENTIDP["ACCESS_TOKEN_MAX_LIFETIME"])
    return min(int(request.client.organization.access_token_lifetime_seconds), cap)
