"""Tenancy: the organization context every query runs in, and the one cross-organization path.

Row-level security in PostgreSQL is the enforcement; this module only tells the database which
organization the current transaction acts for:

* :func:`tenant_context` sets ``app.organization_id`` with ``set_config(..., true)``
  (transaction-local, so a pooled connection never carries it into another request);
* :func:`platform_context` is the single, named and logged path across organizations: inside
  the transaction it switches to the platform database role (``SET LOCAL ROLE``, NOLOGIN,
  BYPASSRLS) that the application role may assume but never holds by default. No request
  parameter reaches it; callers name a reason, and every entry is logged and counted;
* :class:`TenancyMiddleware` opens each request's transaction, resolves the principal and
  enters the right context before any view runs;
* :func:`install_query_guard` makes a query on a tenant table outside any context raise
  (``AGENTIDP["STRICT_TENANCY"]``, on in development and tests) instead of returning nothing.
"""

import logging
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from typing import cast
from uuid import UUID

from django.apps import apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string
from prometheus_client import Counter

from agentidp.conf import agentidp_settings
from agentidp.deadlines import commit_deadlines
from agentidp.deferred import deferred_begin, deferred_run
from agentidp.errors import TenancyError, bearer_challenge, standard_problem
from agentidp.middleware import UNAVAILABLE, exception_response
from agentidp.principals import AuthenticationRejected, AuthenticationUnavailable, Principal

logger = logging.getLogger("agentidp.tenancy")

PLATFORM_ENTRIES = Counter(
    "agentidp_platform_context_entries_total",
    "Entries into the cross-organization platform context, by reason.",
    ["reason"],
)


@dataclass(frozen=True)
class TenantState:
    """What the current transaction is allowed to see."""

    organization_id: UUID | None
    platform_reason: str | None = None


_state: ContextVar[TenantState | None] = ContextVar("agentidp_tenant_state", default=None)
# The organization last set on the request's transaction, so it is not set twice.
_applied: ContextVar[UUID | None] = ContextVar("agentidp_applied_organization", default=None)


def organization_applied(organization_id: UUID) -> None:
    """Note that SQL run by a resolver already set ``organization_id`` on this transaction."""
    _applied.set(organization_id)


def _set_organization(cursor: CursorWrapper, organization_id: UUID | None) -> None:
    value = str(organization_id) if organization_id else ""
    cursor.execute("SELECT set_config('app.organization_id', %s, true)", [value])


def organization_enter(organization_id: UUID, *, using: str = DEFAULT_DB_ALIAS) -> None:
    """Set ``organization_id`` on the current transaction again (after reads that entered
    other organizations through nested :func:`tenant_context` blocks, which restore the outer
    state's organization, not what SQL set since) and note it as applied."""
    with connections[using].cursor() as cursor:
        _set_organization(cursor, organization_id)
    organization_applied(organization_id)


@contextmanager
def tenant_context(organization_id: UUID, *, using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """Run the block in a transaction that sees only ``organization_id``'s rows.

    For Celery tasks and management commands; requests get theirs from the middleware.
    Nested use restores the outer organization on the way out.
    """
    previous = _state.get()
    token = _state.set(TenantState(organization_id=organization_id))
    try:
        with transaction.atomic(using=using):
            with connections[using].cursor() as cursor:
                _set_organization(cursor, organization_id)
            yield
            if previous is not None:
                with connections[using].cursor() as cursor:
                    _set_organization(cursor, previous.organization_id)
    finally:
        _state.reset(token)


def _set_platform_role(cursor: CursorWrapper, enabled: bool) -> None:
    if enabled:
        role = cursor.db.ops.quote_name(agentidp_settings().platform_db_role)
        cursor.execute(f"SET LOCAL ROLE {role}")
    else:
        cursor.execute("SET LOCAL ROLE NONE")


@contextmanager
def platform_context(
    *, reason: str, actor: Principal | None = None, using: str = DEFAULT_DB_ALIAS
) -> Iterator[None]:
    """The one path across organizations: platform staff, beat jobs, pre-auth lookups.

    ``reason`` is a short constant naming the caller (``admin``, ``staff-principal``,
    ``command:createorganization``); it is logged with the actor and counted.
    """
    previous = _state.get()
    token = _state.set(
        TenantState(
            organization_id=previous.organization_id if previous else None,
            platform_reason=reason,
        )
    )
    PLATFORM_ENTRIES.labels(reason=reason).inc()
    logger.debug(
        "platform context entered",
        extra={"reason": reason, "actor": actor.id if actor else None},
    )
    try:
        with transaction.atomic(using=using):
            with connections[using].cursor() as cursor:
                _set_platform_role(cursor, True)
            yield
            if not (previous and previous.platform_reason):
                with connections[using].cursor() as cursor:
                    _set_platform_role(cursor, False)
    finally:
        _state.reset(token)


def adopt_organization(organization_id: uuid.UUID) -> None:
    """Record that the current request's transaction now acts for ``organization_id``.

    For the token endpoint, whose organization becomes known only from the client_id after
    the middleware has started the request; the caller has already set it on the transaction.
    """
    state = _state.get()
    _state.set(
        TenantState(
            organization_id=organization_id,
            platform_reason=state.platform_reason if state else None,
        )
    )


# --- the query guard -------------------------------------------------------------------------


@cache
def tenant_tables() -> frozenset[str]:
    """Tables under row-level security: the organizations table and every table with an
    ``organization_id`` column."""
    names = {"organizations_organization"}
    for model in apps.get_models():
        if any(f.column == "organization_id" for f in model._meta.concrete_fields):
            names.add(model._meta.db_table)
    return frozenset(names)


_QUOTED = re.compile(r'"([a-z0-9_]+)"')


def _query_guard(
    execute: Callable[[str, object, bool, dict[str, object]], object],
    sql: str,
    params: object,
    many: bool,
    context: dict[str, object],
) -> object:
    if _state.get() is None:
        touched = tenant_tables().intersection(_QUOTED.findall(sql))
        if touched:
            raise TenancyError(
                f"query on {', '.join(sorted(touched))} outside any tenant context; "
                "wrap it in tenant_context() or platform_context()"
            )
    return execute(sql, params, many, context)


def install_query_guard(sender: object, connection: BaseDatabaseWrapper, **kwargs: object) -> None:
    """``connection_created`` receiver: guard the application connection when strict."""
    if connection.alias != DEFAULT_DB_ALIAS or not agentidp_settings().strict_tenancy:
        return
    if _query_guard not in connection.execute_wrappers:
        connection.execute_wrappers.append(_query_guard)


# --- roles and grants ------------------------------------------------------------------------


class MigrationRouter:
    """Migrations run as the owner role only; the application role never runs DDL."""

    def allow_migrate(self, db: str, app_label: str, **hints: object) -> bool:
        return db == "owner"


# Deployment-wide tables the application role reaches only through SECURITY DEFINER functions.
FUNCTION_ONLY_TABLES = ("oidc_assertionuse",)
APPEND_ONLY_TABLES = (
    "compliance_auditevent",
    "compliance_auditmerklenode",
    "compliance_auditcheckpoint",
)


def grant_application_privileges(sender: object, using: str = "owner", **kwargs: object) -> None:
    """``post_migrate`` receiver: the application and platform roles may read and write rows,
    never change schema; append-only tables refuse UPDATE and DELETE by privilege as well as by
    trigger."""
    if using != "owner":
        return
    connection = connections[using]
    quote = connection.ops.quote_name
    app_role = quote(str(connections[DEFAULT_DB_ALIAS].settings_dict["USER"]))
    platform_role = quote(agentidp_settings().platform_db_role)
    grantees = f"{app_role}, {platform_role}"
    with connection.cursor() as cursor:
        cursor.execute(f"GRANT USAGE ON SCHEMA public TO {grantees}")
        cursor.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {grantees}"
        )
        cursor.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {grantees}")
        cursor.execute(f"REVOKE INSERT, UPDATE, DELETE ON django_migrations FROM {grantees}")
        for table in APPEND_ONLY_TABLES:
            cursor.execute(f"REVOKE UPDATE, DELETE ON {quote(table)} FROM {grantees}")
        for table in FUNCTION_ONLY_TABLES:
            cursor.execute(f"REVOKE ALL ON {quote(table)} FROM {grantees}")


# --- the request path ------------------------------------------------------------------------

PrincipalResolver = Callable[[HttpRequest], Principal | None]

EXEMPT_PREFIXES: Sequence[str] = ("/healthz", "/readyz", "/metrics", "/static/")
# OAuth endpoints authenticate clients themselves (RFC 6749 errors), never by bearer or session.
CLIENT_AUTHENTICATED_PREFIXES: Sequence[str] = ("/oauth2/",)


@cache
def _resolvers() -> tuple[PrincipalResolver, ...]:
    paths: list[str] = settings.AGENTIDP["PRINCIPAL_RESOLVERS"]
    return tuple(cast(PrincipalResolver, import_string(path)) for path in paths)


def resolve_principal(request: HttpRequest) -> Principal | None:
    """Ask each configured resolver in turn (bearer token, then staff session)."""
    for resolver in _resolvers():
        principal = resolver(request)
        if principal is not None:
            return principal
    return None


@contextmanager
def _request_context(principal: Principal | None, *, admin: bool) -> Iterator[None]:
    organization_id = principal.organization_id if principal else None
    platform_reason = "admin" if (admin and principal and principal.is_platform) else None
    token = _state.set(
        TenantState(organization_id=organization_id, platform_reason=platform_reason)
    )
    set_organization = organization_id is not None and organization_id != _applied.get()
    try:
        if set_organization or platform_reason:
            with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
                if set_organization:
                    # Unset, the transaction-local setting already matches nothing.
                    _set_organization(cursor, organization_id)
                if platform_reason:
                    PLATFORM_ENTRIES.labels(reason=platform_reason).inc()
                    logger.debug(
                        "platform context entered",
                        extra={
                            "reason": platform_reason,
                            "actor": principal.id if principal else None,
                        },
                    )
                    _set_platform_role(cursor, True)
        yield
    finally:
        _state.reset(token)


def invalid_token_response(request: HttpRequest, rejected: AuthenticationRejected) -> HttpResponse:
    """401 for a rejected access token: the same answer whatever the reason (RFC 6750), unless
    the scheme names its own error (a DPoP proof's, RFC 9449 7.1)."""
    challenge = rejected.challenge or bearer_challenge(error="invalid_token")
    return standard_problem(
        request,
        401,
        detail="The access token is invalid."
        if rejected.challenge is None
        else "The access token's DPoP proof is missing or invalid.",
        headers={"WWW-Authenticate": challenge, **rejected.headers},
    )


def authentication_unavailable_response(request: HttpRequest) -> HttpResponse:
    """503 when a presented credential cannot be checked right now: retry, do not discard it."""
    return standard_problem(
        request,
        503,
        detail="Authentication cannot be checked right now; retry shortly.",
        headers={"Retry-After": str(AuthenticationUnavailable.retry_after_seconds)},
    )


class TenancyMiddleware:
    """Opens the request's transaction, resolves the principal and sets its organization.

    Runs after Django's authentication middleware (for staff sessions) and before any view,
    so DRF views, the admin and plain views all run inside the same tenant transaction.
    A response of 400 or above rolls the transaction back: nothing is half-applied.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(tuple(EXEMPT_PREFIXES)):
            return self.get_response(request)
        deferred = deferred_begin()
        try:
            # the client waits for this answer: audited writes commit only while it does
            with commit_deadlines():
                return self._in_transaction(request)
        except UNAVAILABLE as exc:
            # PostgreSQL went away (at BEGIN, in a resolver or at COMMIT), or did not answer in
            # time (agentidp.deadlines): nothing was applied.
            return exception_response(request, exc)
        finally:
            deferred_run(deferred)

    def _in_transaction(self, request: HttpRequest) -> HttpResponse:
        with transaction.atomic():
            # A new transaction carries no organization yet, whatever the last request set.
            _applied.set(None)
            # The principal lookup itself may cross organizations (a staff user's membership,
            # an unauthenticated client_id); resolvers do that through platform_context.
            token = _state.set(TenantState(organization_id=None))
            try:
                principal = (
                    None
                    if request.path.startswith(tuple(CLIENT_AUTHENTICATED_PREFIXES))
                    else resolve_principal(request)
                )
            except AuthenticationRejected as rejected:
                transaction.set_rollback(True)
                return invalid_token_response(request, rejected)
            except AuthenticationUnavailable:
                transaction.set_rollback(True)
                return authentication_unavailable_response(request)
            finally:
                _state.reset(token)
            request.principal = principal  # type: ignore[attr-defined]
            with _request_context(principal, admin=request.path.startswith("/admin/")):
                response = self.get_response(request)
            if response.status_code >= 400:
                transaction.set_rollback(True)
        return response
