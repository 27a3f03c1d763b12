"""Who is acting: the principal resolved once per request, task or command."""

from dataclasses import dataclass, field
from typing import Literal
from uuid import UUID

from django.db import models

PrincipalKind = Literal["user", "agent", "federated", "system"]


class PrincipalStatus(models.TextChoices):
    """Whether a principal may act now (a staff user of a suspended organization may not)."""

    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"


@dataclass(frozen=True)
class Principal:
    """An authenticated actor with its organization and granted scopes."""

    kind: PrincipalKind
    id: str
    organization_id: UUID | None
    scopes: frozenset[str] = field(default_factory=frozenset)
    is_platform: bool = False
    status: str = PrincipalStatus.ACTIVE
    display: str = ""
    # A staff user's role in their organization (owner, admin, member, auditor; "platform" for
    # platform staff), "" for every other kind of principal.
    role: str = ""
    # A federated principal (a partner's agent holding an exchanged token) reads only, unless
    # its partner allows writes.
    read_only: bool = False
    # A delegated token's chain (RFC 8693 ``act``): the agents acting for this principal, the
    # latest first; empty when the principal acts itself.
    act: tuple[str, ...] = ()

    # DRF's permission and throttling code asks these of ``request.user``.
    is_authenticated: bool = True
    is_anonymous: bool = False

    @classmethod
    def system(cls, name: str, *, organization_id: UUID | None = None) -> "Principal":
        """A principal for beat jobs, migrations and operator commands."""
        return cls(
            kind="system",
            id=name,
            organization_id=organization_id,
            scopes=frozenset(),
            is_platform=True,
            display=name,
        )


class AuthenticationRejected(Exception):
    """Credentials were presented and failed; the request is answered 401 without detail, or
    with the ``challenge`` (and ``headers``) a scheme defines for its refusals (DPoP's)."""

    def __init__(
        self, reason: str, *, challenge: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.challenge = challenge
        self.headers = headers or {}


class AuthenticationUnavailable(Exception):
    """Credentials were presented but could not be checked (a store they depend on is down).

    The request is refused with 503 and ``Retry-After``, never served, and never answered as a
    bad credential: the client's token may be fine, and it should retry rather than discard it.
    """

    retry_after_seconds = 5
