"""Explicit hooks that let lower apps announce changes to the apps built on them.

Apps depend downward (agents <- credentials <- oidc), so ``agents`` cannot call credentials
when an agent is suspended or decommissioned. Instead the agent services call
:func:`agent_status_changed`, and upper apps register a handler at startup. Handlers run inside
the service's transaction, so their writes commit or roll back with the change itself.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from agentidp.principals import Principal


@dataclass(frozen=True)
class AgentRegistration:
    """An agent was just registered (its row exists, in the service's transaction)."""

    organization_id: uuid.UUID
    agent_id: uuid.UUID
    actor: Principal


AgentRegistrationHandler = Callable[[AgentRegistration], None]
_agent_registration_handlers: list[AgentRegistrationHandler] = []


def on_agent_registered(handler: AgentRegistrationHandler) -> AgentRegistrationHandler:
    """Register ``handler`` (idempotent); called from an AppConfig's ``ready()``."""
    if handler not in _agent_registration_handlers:
        _agent_registration_handlers.append(handler)
    return handler


def agent_registered(registration: AgentRegistration) -> None:
    """Called by the registration service inside its transaction: a handler that fails fails
    the registration, so nothing is half-written."""
    for handler in _agent_registration_handlers:
        handler(registration)


@dataclass(frozen=True)
class AgentStatusChange:
    """An agent moved from one lifecycle status to another."""

    organization_id: uuid.UUID
    agent_id: uuid.UUID
    previous: str
    current: str
    actor: Principal


AgentStatusHandler = Callable[[AgentStatusChange], None]
_agent_status_handlers: list[AgentStatusHandler] = []


def on_agent_status_change(handler: AgentStatusHandler) -> AgentStatusHandler:
    """Register ``handler`` (idempotent); called from an AppConfig's ``ready()``."""
    if handler not in _agent_status_handlers:
        _agent_status_handlers.append(handler)
    return handler


def agent_status_changed(change: AgentStatusChange) -> None:
    """Called by the agent lifecycle services inside their transaction."""
    for handler in _agent_status_handlers:
        handler(change)


@dataclass(frozen=True)
class CredentialRevocation:
    """Client secrets were revoked (not merely rotated): what they issued must stop too."""

    organization_id: uuid.UUID
    credential_ids: tuple[uuid.UUID, ...]
    actor: Principal


CredentialRevocationHandler = Callable[[CredentialRevocation], None]
_credential_revocation_handlers: list[CredentialRevocationHandler] = []


def on_credential_revocation(handler: CredentialRevocationHandler) -> CredentialRevocationHandler:
    """Register ``handler`` (idempotent); called from an AppConfig's ``ready()``."""
    if handler not in _credential_revocation_handlers:
        _credential_revocation_handlers.append(handler)
    return handler


def credentials_revoked(change: CredentialRevocation) -> None:
    """Called by the credential services inside their transaction."""
    for handler in _credential_revocation_handlers:
        handler(change)


@dataclass(frozen=True)
class StaffAccessLost:
    """A person's login was deactivated or taken out of their organization (in the change's
    transaction): what they answer for (the agents they sponsor) must stop or move."""

    organization_id: uuid.UUID
    user_id: int
    username: str
    reason: str


StaffAccessHandler = Callable[[StaffAccessLost], None]
_staff_access_handlers: list[StaffAccessHandler] = []


def on_staff_access_lost(handler: StaffAccessHandler) -> StaffAccessHandler:
    """Register ``handler`` (idempotent); called from an AppConfig's ``ready()``."""
    if handler not in _staff_access_handlers:
        _staff_access_handlers.append(handler)
    return handler


def staff_access_lost(change: StaffAccessLost) -> None:
    """Called by the organization's services (and the login's save) inside their transaction."""
    for handler in _staff_access_handlers:
        handler(change)
