"""Work that must outlive the request's transaction, run by the tenancy middleware after it.

An authentication failure answers 401, and a 4xx response rolls the request back; its
``auth.failed`` audit event must still be recorded. The middleware opens a list per request
(:func:`deferred_begin`) and runs it afterwards (:func:`deferred_run`), each item in its own
transaction.
"""

import logging
from collections.abc import Callable
from contextvars import ContextVar

logger = logging.getLogger("agentidp.events")

Deferred = Callable[[], None]
_deferred: ContextVar[list[Deferred] | None] = ContextVar("agentidp_deferred", default=None)


def deferred_begin() -> list[Deferred]:
    items: list[Deferred] = []
    _deferred.set(items)
    return items


def deferred_run(items: list[Deferred]) -> None:
    """Run the request's deferred work; a failure is logged, never raised to the caller."""
    _deferred.set(None)
    for work in items:
        try:
            work()
        except Exception:  # the response is already decided; losing an event must be visible
            logger.exception("could not record a deferred audit event")


def defer_after_request(work: Deferred) -> bool:
    """Queue ``work`` for after the current request; False outside a request."""
    items = _deferred.get()
    if items is None:
        return False
    items.append(work)
    return True
