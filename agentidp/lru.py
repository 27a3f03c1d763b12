"""A bounded, thread-safe least-recently-used map: the per-process caches of hot paths (policy
decisions, verified tokens, the token endpoint's client records)."""

import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedLRU(Generic[K, V]):  # noqa: UP046 - Python 3.11 has no PEP 695 syntax
    """At most ``max_entries`` entries, the least recently used going first; with ``max_age``
    (seconds), an entry older than that is gone whatever its use."""

    def __init__(self, max_entries: int, max_age: float | None = None) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            stored_at, value = found
            if self.max_age is not None and time.monotonic() - stored_at > self.max_age:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
