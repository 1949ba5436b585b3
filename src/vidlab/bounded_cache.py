"""The one size-bounded cache in vidlab: decoded clips, decoded images and vision-encoder outputs all use it.

cachetools' LRUCache does the bookkeeping (sizes, least recently used first out); this adds the lock
(worker threads share the caches) and the hit and miss counts the server's /metrics shows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from cachetools import LRUCache

Value = TypeVar("Value")


class BoundedCache(Generic[Value]):
    """Values by key, at most `max_bytes` of them by `size(value)`; the least recently used go first.

    A value larger than `max_bytes` is not kept (and what the cache holds stays). Thread-safe.
    """

    def __init__(self, max_bytes: int, size: Callable[[Value], int]):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 or more (got {max_bytes})")
        self._values: LRUCache = LRUCache(maxsize=max_bytes, getsizeof=size)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def max_bytes(self) -> int:
        return int(self._values.maxsize)

    @property
    def bytes(self) -> int:
        """The size of what the cache holds now."""
        return int(self._values.currsize)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._values

    def get(self, key: Hashable) -> Value | None:
        """The value kept under `key` (now the most recently used), or None; counted as a hit or a miss."""
        with self._lock:
            value = self._values.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
            return value

    def put(self, key: Hashable, value: Value) -> Value:
        """Keep `value` under `key` (unless it alone is over the bound); returns it."""
        with self._lock:
            try:
                self._values[key] = value
            except ValueError:  # larger than the whole cache: not kept
                pass
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
