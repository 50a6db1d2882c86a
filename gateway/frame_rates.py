"""Frames per second of a camera, measured where its frames pass (gateway/video.py).

The console shows each camera's fps and analysed fps at first sight: a rate measured between
two asks of the camera list (as it was) has nothing to say on the first. So the video
runtime counts each frame's arrival here, and a snapshot reads the rate over the last
``window_s`` seconds: the frames in it divided by the window, or by the time since the
first frame while the camera is younger than the window (at least a second, so one frame
just in does not read as a thousand per second). A stream that stops falls to 0 within the
window. Memory is bounded: at most ``max_ticks`` arrival times are kept (a faster stream
than that over the window is measured over the ticks kept).

Frames arrive on camera and detection threads while the loop reads the rate: one lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW_S = 10.0
MAX_TICKS = 2048  # ~200 fps over 10 s


class RateMeter:
    def __init__(
        self,
        window_s: float = WINDOW_S,
        max_ticks: int = MAX_TICKS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_s = window_s
        self._ticks: deque[float] = deque(maxlen=max_ticks)
        self._first: float | None = None
        self._clock = clock
        self._lock = threading.Lock()

    def tick(self) -> None:
        """One frame, now."""
        now = self._clock()
        with self._lock:
            if self._first is None:
                self._first = now
            self._ticks.append(now)

    def rate(self) -> float | None:
        """Frames per second over the window (2 decimals); None before the first frame."""
        now = self._clock()
        with self._lock:
            if self._first is None:
                return None
            while self._ticks and self._ticks[0] < now - self._window_s:
                self._ticks.popleft()
            count = len(self._ticks)
            if count == self._ticks.maxlen:  # the window holds more: over the ticks kept
                span = now - self._ticks[0]
            else:
                span = max(min(self._window_s, now - self._first), 1.0)
        return round(count / span, 2) if span > 0 else None
