"""Bounded waits on PostgreSQL, even when the server cannot answer at all.

``statement_timeout`` and ``lock_timeout`` (``DB_STATEMENT_TIMEOUT``, ``DB_LOCK_TIMEOUT``) are
enforced by the server, and a server that is frozen (stopped by SIGSTOP, swapped out, its host
hung) enforces nothing: the kernel still acknowledges the bytes, so the client waits for ever.
Two more bounds close that gap:

* **The client gives up.** Every statement, commit and rollback on the application's connection
  runs under a deadline (the statement timeout plus :data:`GRACE_SECONDS`). One watchdog
  thread per process shuts the connection's socket down when a deadline passes; psycopg then
  raises ``OperationalError`` at once, which the request answers as 503 in its format and the
  connection is discarded. Connecting is bounded by libpq's ``connect_timeout``
  (``DB_CONNECT_TIMEOUT``).
* **The server refuses a late commit.** A statement already sent when the server froze is
  still in its socket buffer when it resumes, and would run then: a token would be recorded
  and audited as issued after its client was told 503. Each statement that appends an audit
  event during a request also sets ``app.commit_deadline`` (transaction-local) to the
  statement's time plus the statement timeout, and a deferred trigger on the audit table
  refuses to commit after it (``compliance/0010``). The client's own deadline on the commit is
  always later (the commit starts after the append, and the client adds the grace), so a
  transaction the client gave up on never commits, while one it waits for always may.
"""

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from django.conf import settings

GRACE_SECONDS = 1.0
_TICK = 0.1  # how often the watchdog looks; deadlines are honoured to within this

T = TypeVar("T")


def statement_timeout_seconds() -> float:
    return int(settings.AGENTIDP["DB_STATEMENT_TIMEOUT_MS"]) / 1000


class _Watchdog:
    """Deadlines of statements in flight, by token; one thread shuts overdue sockets down."""

    def __init__(self) -> None:
        self._fresh()
        # a forked worker (gunicorn, Celery's pool) starts with no thread and a fresh lock
        os.register_at_fork(after_in_child=self._fresh)

    def _fresh(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[float, int]] = {}
        self._next = 0
        self._thread: threading.Thread | None = None

    def arm(self, fd: int, seconds: float) -> int:
        with self._lock:
            self._next += 1
            token = self._next
            self._armed[token] = (time.monotonic() + seconds, fd)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="agentidp-db-deadlines", daemon=True
                )
                self._thread.start()
        return token

    def disarm(self, token: int) -> None:
        with self._lock:
            self._armed.pop(token, None)

    def _run(self) -> None:
        while True:
            time.sleep(_TICK)
            now = time.monotonic()
            with self._lock:
                # under the lock: a disarmed statement's socket is never touched, and an armed
                # one's file descriptor is still open (its statement has not returned)
                for token, (deadline, fd) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[token]
                        _shut(fd)


def _shut(fd: int) -> None:
    try:
        duplicate = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone
    finally:
        duplicate.close()


_watchdog = _Watchdog()


@contextlib.contextmanager
def deadline(fd: int | None, seconds: float) -> Iterator[None]:
    """Run the block (one round trip on the connection whose socket is ``fd``) for at most
    ``seconds``; past that the socket is shut down and the driver raises."""
    if fd is None or fd < 0 or seconds <= 0:
        yield
        return
    token = _watchdog.arm(fd, seconds)
    try:
        yield
    finally:
        _watchdog.disarm(token)


def bounded(fd: int | None, call: Callable[[], T], seconds: float | None = None) -> T:
    """``call()`` under :func:`deadline` (the statement timeout plus the grace by default)."""
    with deadline(
        fd, seconds if seconds is not None else statement_timeout_seconds() + GRACE_SECONDS
    ):
        return call()


# --- the commit deadline of a request's audited writes -------------------------------------

_commit_deadlines: ContextVar[bool] = ContextVar("agentidp_commit_deadlines", default=False)


@contextlib.contextmanager
def commit_deadlines() -> Iterator[None]:
    """Within the block (a web request), statements that append audit events set
    ``app.commit_deadline``: the client is waiting for the answer, so what commits after it
    stopped waiting must not commit at all. Jobs and commands run without it."""
    token = _commit_deadlines.set(True)
    try:
        yield
    finally:
        _commit_deadlines.reset(token)


def commit_deadline() -> str | None:
    """The ``app.commit_deadline`` a statement appending an audit event now sets (ISO 8601,
    UTC), or ``None`` outside a request."""
    if not _commit_deadlines.get():
        return None
    moment = datetime.now(UTC) + timedelta(seconds=statement_timeout_seconds())
    return moment.isoformat()
