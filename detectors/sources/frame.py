"""What every video source yields, the interface the supervisor drives, and frame sampling."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# A frame is taken when it is at most this fraction of a period early: decoded frames land
# on their own grid (keyframes, 25 fps, network jitter), not on the sampling grid.
_EARLY_FRACTION = 0.1


@dataclass(frozen=True, slots=True)
class Frame:
    """One analysed frame.

    ``ts_ms`` is the event time in epoch milliseconds: the wall clock at decode for a live
    source, the caller's file start epoch plus the frame's PTS for a file. ``index`` counts
    the frames this source has yielded (0, 1, 2, ...), so a consumer can see its own drops.
    ``keyframe`` is False where the decoder cannot tell (OpenCV).
    """

    image: np.ndarray  # BGR, height x width x 3, uint8
    ts_ms: int
    index: int
    keyframe: bool


class SourceError(Exception):
    """A source cannot be opened or read, with a reason a person can act on.

    ``permanent`` errors (a file that is missing or not a video) are not worth retrying;
    live sources fail transiently: a camera that is down now may be back in a minute.
    """

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class VideoSource(Protocol):
    """A camera stream or a video file, sampled at the analysis rate.

    ``frames()`` opens the source and yields sampled frames; it raises ``SourceError``
    when opening or reading fails, and returns at the end of a file, at the end of a live
    stream, or soon after ``interrupt()``. Only ``interrupt()`` may be called from another
    thread: the decoder libraries are not safe to close under a reading thread. An object
    is one connection: the supervisor opens a new source for every reconnect.
    """

    live: bool

    def frames(self) -> Iterator[Frame]: ...

    def interrupt(self) -> None: ...

    def close(self) -> None: ...


class Sampler:
    """Takes frames on a grid of ``1 / fps`` seconds, whatever the source frame rate.

    A grid rather than "period since the last frame taken", so sampling 25 fps at 1 fps
    gives 1 fps on average instead of drifting to 1/(1 - early) fps. After a gap the grid
    restarts at the next frame; a clock going back (a file looping) restarts it too.
    """

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self._due: float | None = None
        self._last = float("-inf")

    def take(self, t: float) -> bool:
        """Whether the frame at time ``t`` (seconds, any origin) is to be analysed."""
        if t < self._last:
            self._due = None
        if self._due is not None and t < self._due - _EARLY_FRACTION * self.period:
            return False
        self._due = t + self.period if self._due is None else self._due + self.period
        if self._due <= t:
            self._due = t + self.period
        self._last = t
        return True
