"""A small thread-safe LRU mapping with a fixed size bound.  Pure Python."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
_MISSING = object()


class BoundedCache(Generic[K, V]):
    def __init__(self, maxsize: int) -> None:
        self.maxsize = max(1, int(maxsize))
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        #: ``get`` without marking the entry recently used: one C call, for per-request paths (an entry read
        #: only this way is evicted in insertion order; every ``set`` marks it again).
        self.peek = self._data.get

    def get(self, key: K, default: object = _MISSING) -> V | object:
        # No lock: each OrderedDict operation is atomic under the GIL, and an entry evicted between the two
        # steps only means it is not marked recently used.  Writers (set, pop, clear) take the lock.
        try:
            value = self._data[key]
        except KeyError:
            return default
        try:
            self._data.move_to_end(key)
        except KeyError:
            pass
        return value

    def set(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


MISSING = _MISSING
