"""Token status lists (draft-ietf-oauth-status-list): how a resource server that verifies tokens
offline learns that one was revoked, without calling introspection.

Every access token carries ``status: {"status_list": {"idx": N, "uri": ".../oauth2/status/L"}}``.
The indexes are deployment-wide: process-local blocks of :data:`BLOCK` taken from the
``oidc_status_block`` sequence (one ``nextval`` per block, none on most token requests), list
``L`` holding indexes ``L * LIST_SIZE`` to ``(L + 1) * LIST_SIZE - 1``. A gap left by a block a
process never used up is a run of valid bits nobody references.

The lists themselves are served by :mod:`oidc.statuslists`.
"""

import os
import threading

from django.db import connection

from agentidp.conf import agentidp_settings
from agentidp.errors import JSONValue

LIST_SIZE = 1 << 20  # bits per list: 128 KiB before compression
BLOCK = 256  # indexes a process takes from the sequence at a time


class _Allocator:
    """Status-list indexes for this process, a block at a time. Forked processes (gunicorn's
    workers, Celery's) never share a block: one taken before the fork is dropped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._next = 0
        self._end = 0

    def take(self) -> int:
        with self._lock:
            if self._pid != os.getpid() or self._next >= self._end:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT nextval('oidc_status_block')")
                    row = cursor.fetchone()
                assert row is not None  # noqa: S101 - nextval returns a row
                self._next = (int(row[0]) - 1) * BLOCK
                self._end = self._next + BLOCK
                self._pid = os.getpid()
            index = self._next
            self._next += 1
            return index


_allocator = _Allocator()


def status_index_take() -> int:
    """A fresh index for a token about to be signed."""
    return _allocator.take()


def status_list_uri(list_number: int) -> str:
    return f"{agentidp_settings().issuer}/oauth2/status/{list_number}"


def status_claim(index: int) -> dict[str, JSONValue]:
    """The token's ``status`` claim for its deployment-wide ``index``."""
    return {"status_list": {"idx": index % LIST_SIZE, "uri": status_list_uri(index // LIST_SIZE)}}
