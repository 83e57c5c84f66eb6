"""A small in-process cache of rendered pages, keyed by the database's serial.

Keys always include the serial the page was rendered at, so every process
(and every host) answers the same: a change moves the serial and the old
entry simply stops being asked for. No in-process invalidation is needed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


class RenderCache:
    """A thread-safe LRU of at most ``size`` rendered pages."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._data: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_render(self, key: Hashable, render: Callable[[], T]) -> T:
        """The cached value for ``key``, rendering (outside the lock) on a miss."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]  # type: ignore[return-value]
            self.misses += 1
        value = render()
        if self.size:
            with self._lock:
                self._data[key] = value
                self._data.move_to_end(key)
                while len(self._data) > self.size:
                    self._data.popitem(last=False)
        return value
