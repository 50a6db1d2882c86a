"""One message the fleet will publish, planned in event time and rendered at send time.

Timestamps are kept as offsets because the event clock's origin is only fixed when the run
starts (``event_start_ms = now - duration``); a future-timestamp fault needs the wall clock
at the moment it is sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from simulators.fleet.contract import topic_for


@dataclass(frozen=True, slots=True)
class Outgoing:
    offset_ms: int  # event-time offset at which it is sent
    device_id: str
    purpose: str  # "reading", or the rejection reason it is staged to provoke
    seq: int | None = None
    ts_offset_ms: int | None = None  # ts = event_start_ms + this
    values: dict[str, Any] | None = None
    ahead_ms: int | None = None  # ts = wall clock at send + this, instead of the above
    raw: bytes | None = None  # sent verbatim instead of a JSON body

    @property
    def topic(self) -> str:
        return topic_for(self.device_id)

    def payload(self, event_start_ms: int, wall_ms: int) -> bytes:
        """The wire bytes: the same inputs always give the same bytes (duplicates rely on it)."""
        if self.raw is not None:
            return self.raw
        body: dict[str, Any] = {}
        if self.ahead_ms is not None:
            body["ts"] = wall_ms + self.ahead_ms
        elif self.ts_offset_ms is not None:
            body["ts"] = event_start_ms + self.ts_offset_ms
        if self.seq is not None:
            body["seq"] = self.seq
        if self.values is not None:
            body["values"] = self.values
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
