"""A small in-process cache of rendered pages, keyed by the database's serial.

Keys always include the serial the page was rendered at, so every process
(and every host) answers the same: a change moves the serial and the old
entry simply stops being asked for. No in-process invalidation is needed.
The cache is bounded by the bytes it holds, not by its number of entries: a
10,000-file project's pages are megabytes where a small project's are a few KB.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")

#: The default bound: 64 MB of rendered pages per process.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def size_of(value: object) -> int:
    """About how many bytes ``value`` holds (bytes and text by length, tuples by their parts)."""
    if isinstance(value, (bytes, bytearray, str)):
        return len(value) + 64
    if isinstance(value, (tuple, list)):
        return sum(size_of(v) for v in value) + 64
    nbytes = getattr(value, "nbytes", None)  # a rendered page (shared_pages.Page)
    if isinstance(nbytes, int):
        return nbytes + 256
    return sys.getsizeof(value)


class RenderCache:
    """A thread-safe LRU of rendered pages holding at most ``max_bytes`` (0: cache nothing).

    A page larger than a quarter of the bound is not kept (it would evict everything else).
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._data: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Lock] = {}

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable) -> object | None:
        with self._lock:
            found = self._data.get(key)
            if found is None:
                return None
            self._data.move_to_end(key)
            return found[0]

    def put(self, key: Hashable, value: object) -> None:
        size = size_of(value)
        if not self.max_bytes or size > self.max_bytes // 4:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._data[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes and self._data:
                _, (_, dropped) = self._data.popitem(last=False)
                self.bytes -= dropped

    def get_or_render(self, key: Hashable, render: Callable[[], T]) -> T:
        """The cached value for ``key``, rendering (outside the lock) on a miss."""
        with self._lock:
            found = self._data.get(key)
            if found is not None:
                self._data.move_to_end(key)
                return found[0]  # type: ignore[return-value]
        value = render()
        if value is not None:
            self.put(key, value)
        return value

    def get_or_load(self, key: Hashable, load: Callable[[], T]) -> T:
        """Like get_or_render, but one thread of the process loads ``key`` while the others
        wait for it: a large page is read or rendered once, not once per thread at a time."""
        found = self.get(key)
        if found is not None:
            return found  # type: ignore[return-value]
        with self._lock:
            lock = self._loading.setdefault(key, threading.Lock())
        with lock:
            try:
                found = self.get(key)
                if found is not None:
                    return found  # type: ignore[return-value]
                value = load()
                if value is not None:
                    self.put(key, value)
                return value
            finally:
                with self._lock:
                    self._loading.pop(key, None)
