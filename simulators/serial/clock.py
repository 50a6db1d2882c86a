"""The simulation's event clock: event time runs ``scale`` times faster than real time from
the moment the run starts, as in the fleet runner."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class EventClock:
    scale: float
    started: float = field(default_factory=time.monotonic)

    def offset_ms(self) -> float:
        """Event milliseconds since the start."""
        return (time.monotonic() - self.started) * 1000 * self.scale

    def real_at(self, offset_ms: float) -> float:
        """The monotonic time at which an event offset is due."""
        return self.started + offset_ms / 1000 / self.scale
