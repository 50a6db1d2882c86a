"""Possible matches in a mapped-REST lookup: listed items near our case's place and time.

A platform that lost our key (or a citizen who reported the same spot first) lists a case
we cannot recognise by key. ``FindCase.nearby`` says where an item gives its place, time
and service; this module reads them, leniently and within bounds, and judges the item by
``platform.NearbyCase``: a candidate parks the command for an operator, never is taken as
ours. What cannot be read makes an item no candidate (it is still counted by key).

Places are compared in the mapping's own coordinate system, our case's place converted
into it: metres apart in a projected system, great-circle metres between degrees in a
geographic one (WGS-84, GCJ-02 and BD-09 are each locally a shift of the others: the
distance between two points of one datum is the same to well under a metre).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from case_bridge.coordinates import PlatformCoordinates
from case_bridge.mapped_rest_settings import NearbyItems, as_text
from case_bridge.platform import (
    MAX_FIELD_CHARS,
    Candidate,
    case_place,
    first_alert_ms,
    nearby_candidate,
    usable_case_id,
)
from domain import Location

MAX_NUMBER_CHARS = 32  # a coordinate sent as text
EPOCH_MS_BOUND = 2**53


@dataclass(frozen=True, slots=True)
class MappedNearby:
    """Our case as the platform would list it (service text, place in its system, first
    alert), and where its items give theirs."""

    items: NearbyItems
    service: str
    x: float
    y: float
    projected: bool
    first_ms: int
    tz: ZoneInfo

    @classmethod
    def of(
        cls,
        items: NearbyItems,
        coordinates: PlatformCoordinates,
        tz: ZoneInfo,
        root: dict[str, Any],
        service: Any,
    ) -> MappedNearby | None:
        """Our case in the mapping's ``coordinates`` and time zone; None when it has no
        place, alert time or service value to compare."""
        place, first_ms = case_place(root), first_alert_ms(root)
        if place is None or first_ms is None or not isinstance(service, str | int | float):
            return None
        try:
            x, y = coordinates.xy(*place)
        except ValueError:
            return None
        projected = coordinates.system.startswith("EPSG:")
        return cls(items, as_text(service), x, y, projected, first_ms, tz)

    def candidate(self, fields: dict[str, Any]) -> Candidate | None:
        """The candidate a listed item is, or None (another service, too far, outside the
        window, or a place, time or id that cannot be read). ``fields``: the item's values
        at ``id``, ``service``, ``x``, ``y`` and ``time`` (None where it has none)."""
        case_id = usable_case_id(_text(fields["id"]))
        x, y = _number(fields["x"]), _number(fields["y"])
        moment_ms = item_time_ms(fields["time"], self.items.time_format, self.tz)
        if case_id is None or _text(fields["service"]) != self.service:
            return None
        if x is None or y is None or moment_ms is None:
            return None
        if self.projected:
            distance = math.hypot(x - self.x, y - self.y)
        elif abs(y) <= 90 and abs(x) <= 180:
            distance = Location(self.y, self.x).distance_m(Location(y, x))
        else:
            return None
        return nearby_candidate(self.items, case_id, distance, moment_ms, self.first_ms)


def item_time_ms(value: object, time_format: str | None, tz: ZoneInfo) -> float | None:
    """A listed item's time in epoch ms: an integer is epoch ms; text is read with
    ``time_format`` (strptime) when given, else as ISO 8601; text without a zone is in
    ``tz``. None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value) if 0 <= value < EPOCH_MS_BOUND else None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_FIELD_CHARS:
        return None
    try:
        if time_format is not None:
            moment = datetime.strptime(value, time_format)
        else:
            moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=tz)
        return moment.astimezone(UTC).timestamp() * 1000
    except (ValueError, OverflowError, OSError):
        return None


def _text(value: object) -> str | None:
    if isinstance(value, str) and len(value) <= MAX_FIELD_CHARS:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return as_text(value)
    return None


def _number(value: object) -> float | None:
    """A finite coordinate, sent as a number or as decimal text."""
    if isinstance(value, str) and len(value) <= MAX_NUMBER_CHARS:
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
