"""The one function every service calls to record a domain event.

It writes the hash-chained audit row in the caller's transaction, so an event exists exactly
when its change commits. The audit table is also the outbox: each organization's chain is
gapless and its sequence numbers commit in order (the chain head's row lock is held until
commit), so a consumer that remembers the last sequence it handed on (``webhooks``' cursors)
misses nothing and needs no second row per event. After commit, :func:`events_committed`
wakes the consumers registered with :func:`on_events_committed`: from a background thread that
coalesces bursts, so a hot path pays for a set insertion, not a broker round trip. A wake that
is lost (the process dies first) only delays delivery until the next beat run.
"""

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from functools import partial

from django.db import close_old_connections, transaction

from agentidp.deferred import defer_after_request
from agentidp.errors import JSONValue
from agentidp.principals import Principal
from agentidp.tenancy import tenant_context
from compliance.models import AuditEvent
from compliance.services import CompanionInsert, audit_event_append


def event_record(
    *,
    organization_id: uuid.UUID,
    actor: Principal,
    action: str,
    subject_type: str,
    subject_id: str,
    data: Mapping[str, JSONValue] | None = None,
    outcome: str = "success",
    companion: CompanionInsert | None = None,
) -> AuditEvent:
    """Record ``action`` on ``subject`` by ``actor``; ``data`` must never hold a secret.

    ``companion``: the INSERT that made the change, sent in the same statement (one round trip
    on a hot path); its new row's id is left on it as ``inserted_id``.

    A person's events record who they were as they acted (``data.actor``: their username and
    role), so the log names them even after their login is gone.
    """
    recorded = dict(data or {})
    if actor.kind == "user" and actor.display:
        recorded.setdefault("actor", {"username": actor.display, "role": actor.role or None})
    if actor.act:  # a delegated token: who acted for the actor, the latest first
        recorded.setdefault("act", list[JSONValue](actor.act))
    event = audit_event_append(
        organization_id=organization_id,
        actor_type=actor.kind,
        actor_id=actor.id,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        data=recorded,
        outcome=outcome,
        companion=companion,
    )
    transaction.on_commit(partial(events_committed, organization_id), robust=True)
    return event


def event_record_after_request(
    *,
    organization_id: uuid.UUID,
    actor: Principal,
    action: str,
    subject_type: str,
    subject_id: str,
    data: Mapping[str, JSONValue] | None = None,
    outcome: str = "failure",
) -> None:
    """Record an event after the request's transaction ends, whether it commits or not (the
    tenancy middleware runs it; outside a request, at once)."""

    def record() -> None:
        with tenant_context(organization_id):
            event_record(
                organization_id=organization_id,
                actor=actor,
                action=action,
                subject_type=subject_type,
                subject_id=subject_id,
                data=data,
                outcome=outcome,
            )

    if not defer_after_request(record):
        record()


# --- waking the consumers after commit -------------------------------------------------------

logger = logging.getLogger("agentidp.events")

CommittedHandler = Callable[[uuid.UUID], None]
_committed_handlers: list[CommittedHandler] = []


def on_events_committed(handler: CommittedHandler) -> None:
    """Call ``handler(organization_id)`` soon after an organization's events commit (from an
    AppConfig's ``ready()``; idempotent). It runs on a background thread, once per burst."""
    if handler not in _committed_handlers:
        _committed_handlers.append(handler)


class _Waker:
    """One daemon thread per process that hands committed organizations to the handlers,
    at most once per organization every :attr:`window` seconds."""

    window = 0.02

    def __init__(self) -> None:
        self._fresh()
        # a forked worker (gunicorn, Celery's pool) starts with no thread and fresh locks
        os.register_at_fork(after_in_child=self._fresh)

    def _fresh(self) -> None:
        self._pending: set[uuid.UUID] = set()
        self._lock = threading.Lock()
        self._signal = threading.Event()
        self._started = False

    def add(self, organization_id: uuid.UUID) -> None:
        """Note the organization; only the first note since the thread last looked wakes it
        (a hot path under load pays for a lock and a set insertion)."""
        with self._lock:
            first = not self._pending
            self._pending.add(organization_id)
            if not self._started:
                self._started = True
                threading.Thread(target=self._run, name="agentidp-events", daemon=True).start()
        if first:
            self._signal.set()

    def _run(self) -> None:
        while True:
            self._signal.wait()
            time.sleep(self.window)  # let a burst gather
            self._signal.clear()
            with self._lock:
                pending, self._pending = self._pending, set()
            for organization_id in pending:
                for handler in _committed_handlers:
                    try:
                        handler(organization_id)
                    except Exception:  # a wake is an optimisation: beat catches up
                        logger.exception("waking event consumers failed")
            try:
                close_old_connections()  # as after a request: a broken connection is not kept
            except Exception:  # the thread must outlive any one failure
                logger.warning("could not check the wake-up thread's database connection")


_waker = _Waker()


def events_committed(organization_id: uuid.UUID) -> None:
    """Events of ``organization_id`` have just committed: wake their consumers soon."""
    if _committed_handlers:
        _waker.add(organization_id)
