"""Django's PostgreSQL backend with every wait bounded (:mod:`agentidp.deadlines`): each
statement (through an execute wrapper), commit, rollback and health check runs under the
client-side deadline, so a frozen server costs a request the statement timeout and a second,
not the whole freeze. Connecting is bounded by libpq's ``connect_timeout`` (settings)."""

from collections.abc import Callable
from typing import TypeVar

from django.db.backends.postgresql import base

from agentidp.deadlines import bounded

T = TypeVar("T")
Execute = Callable[[str, object, bool, dict[str, object]], object]


class DatabaseWrapper(base.DatabaseWrapper):
    """``django.db.backends.postgresql`` with client-side deadlines."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.execute_wrappers.insert(0, self._bounded_execute)

    def _fd(self) -> int | None:
        connection = self.connection
        if connection is None or connection.closed:
            return None
        fd: int = connection.fileno()
        return fd

    def _bounded(self, call: Callable[[], T]) -> T:
        return bounded(self._fd(), call)

    def _bounded_execute(
        self, execute: Execute, sql: str, params: object, many: bool, context: dict[str, object]
    ) -> object:
        return self._bounded(lambda: execute(sql, params, many, context))

    def _commit(self) -> None:
        self._bounded(super()._commit)  # type: ignore[misc]  # not in django-stubs

    def _rollback(self) -> None:
        self._bounded(super()._rollback)  # type: ignore[misc]  # not in django-stubs

    def is_usable(self) -> bool:
        return self._bounded(super().is_usable)
