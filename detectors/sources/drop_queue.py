"""A bounded queue that drops its oldest item instead of blocking the producer."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """Holds the newest ``maxsize`` items; ``put`` never blocks.

    For live video the newest frame is the one worth analysing: a consumer that falls
    behind should skip ahead, not work through a backlog, and the reader must keep pulling
    from the network or the camera's buffers overflow. ``dropped`` counts what was lost.
    """

    def __init__(self, maxsize: int = 2) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._ready = threading.Condition()
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Adds ``item``; returns True when the oldest item had to be dropped for it."""
        with self._ready:
            dropped = len(self._items) >= self._maxsize
            if dropped:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._ready.notify()
            return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item held, waiting up to ``timeout`` seconds; None if none came."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._items, timeout):
                return None
            return self._items.popleft()

    def __len__(self) -> int:
        with self._ready:
            return len(self._items)
