"""A reading's event time: every timestamp format a device or fleet sends (epoch ms, epoch
seconds as an integer or a float, ISO 8601, a binary u32) becomes integer epoch ms here, and
passes one bound check, ``ts_rejection``.

Why bounds at all: a timestamp is stored as a 64-bit integer and drives rule windows and
device health; an integer ``ts`` of 400 digits or ``1e306`` seconds overflows each of those,
and one negative ``ts`` rewinds a device's history. The bounds:

- not before 2000-01-01T00:00:00Z (``EARLIEST_TS_MS``): a device without a real-time clock
  reports 1970 (or 0) until it syncs, and no sensor of a deployed fleet has data from the
  last century. Refused as ``out_of_range``, naming the unset clock;
- not after our own clock plus the allowed skew (``max_future_skew_ms``), refused as
  ``future_timestamp``; and never after 9999-12-31 (``LATEST_TS_MS``, inside int64 and
  Python's datetime) whatever our clock says.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from devices.limits import shown
from devices.rejections import Reason, Rejection

EARLIEST_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
LATEST_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
# The longest ISO 8601 time with zone: 2025-11-21T12:40:00.123456+08:00 is 32 characters.
_ISO_MAX_CHARS = 40
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def ms_from_number(raw: Any, unit_ms: int) -> int | None:
    """A JSON number in seconds (``unit_ms`` 1000) or milliseconds (1) as whole epoch ms;
    None for anything else: booleans, NaN, infinities, fractions of a millisecond."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw * unit_ms
    if not isinstance(raw, float) or not math.isfinite(raw):
        return None
    ms = raw * unit_ms
    if not math.isfinite(ms):  # seconds beyond any calendar: exact, for the bound to refuse
        return int(raw) * unit_ms
    if unit_ms == 1 and not ms.is_integer():
        return None
    return round(ms)


def ms_from_iso8601(text: str) -> int | None:
    """Epoch ms of an ISO 8601 time with zone; None when it is not one."""
    if len(text) > _ISO_MAX_CHARS:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:  # a local time without zone is ambiguous: refuse it
        return None
    return (parsed - _EPOCH) // _MS


def ts_rejection(ts: int, now_ms: int, max_future_skew_ms: int, device_id: str) -> Rejection | None:
    """Why an event time cannot be a reading's, or None: the one bound check for every
    format (see the module docstring)."""
    if ts < EARLIEST_TS_MS:
        detail = f"ts {shown(ts)} is before 2000-01-01T00:00:00Z: the device clock is not set"
        return Rejection(Reason.OUT_OF_RANGE, detail, device_id)
    if ts > LATEST_TS_MS:
        return Rejection(Reason.FUTURE_TIMESTAMP, "ts is after 9999-12-31", device_id)
    if ts > now_ms + max_future_skew_ms:  # a device clock far ahead would pin it in the future
        ahead = (ts - now_ms) / 1000
        return Rejection(Reason.FUTURE_TIMESTAMP, f"ts is {ahead:.0f} s ahead of now", device_id)
    return None
