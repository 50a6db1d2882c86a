"""How long to wait before trying again: one backoff and one ``Retry-After`` parser.

Every room retries something (a camera's stream, a serial port, a Modbus slave, the case
platform, InfluxDB), so the policy lives here once instead of in four slightly different
copies.

Backoff: the n-th retry in a row waits a ceiling of ``min(max_s, initial_s * 2**n)``, and a
delay drawn uniformly from the upper half of it, ``[ceiling/2, ceiling]`` ("equal jitter").
Why not full jitter (``[0, ceiling]``)? It spreads a herd best, but it can also retry at
once: a dead Modbus slave polled again after 3 ms, a platform that just answered 503 hit
again immediately. Why not a ±spread around the ceiling? At the cap, a hundred cameras
behind one rebooted switch would all come back within a few seconds of each other. Half
fixed, half random keeps a minimum wait and still spreads a herd over half the ceiling.
The exponent stops growing at the cap, so a peer that stays dead for months neither
overflows a float nor drifts.

``Retry-After`` (RFC 9110 §10.2.3) is either delta-seconds (digits) or an HTTP-date. A
value from outside is bounded before it is believed: anything negative, fractional, not a
number, unparseable or longer than ``MAX_RETRY_AFTER_S`` is ignored (None), so a broken or
hostile header can neither raise nor stall a sender for a year. A date in the past means
"now" (0 s). When a peer sends one, the longer of it and the backoff is waited, the peer's
up to ``HONOURED_RETRY_AFTER_S``.
"""

from __future__ import annotations

import email.utils
import math
import random
from datetime import UTC

# A Retry-After beyond this is taken as a broken header, not honoured.
MAX_RETRY_AFTER_S = 86_400.0
# A peer that asks for a longer pause than this is retried after this long: it asked for a
# pause, not to be forgotten for the day.
HONOURED_RETRY_AFTER_S = 900.0
# An HTTP-date is 29 characters; delta-seconds within a day are at most 5 digits.
_MAX_HEADER_CHARS = 64
# 2.0 ** 1000 is finite; any attempt past this waits the cap anyway.
_MAX_EXPONENT = 1000


def backoff_ceiling_s(attempt: int, initial_s: float, max_s: float) -> float:
    """The longest wait before retry number ``attempt`` (0 for the first retry)."""
    exponent = min(max(attempt, 0), _MAX_EXPONENT)
    return min(max_s, initial_s * 2.0**exponent)


class Backoff:
    """Exponential backoff with equal jitter (see the module docstring), capped.

    Use ``next_delay()`` for retries in a row and ``reset()`` after a success; or
    ``delay_s(attempt)`` when the attempt count is kept elsewhere (an outbox row).
    ``rng`` is injectable so tests can draw exact delays.
    """

    def __init__(
        self, initial_s: float = 1.0, max_s: float = 30.0, rng: random.Random | None = None
    ) -> None:
        if not (math.isfinite(initial_s) and initial_s > 0):
            raise ValueError(f"initial_s must be a positive number of seconds, not {initial_s}")
        if not (math.isfinite(max_s) and max_s > 0):
            raise ValueError(f"max_s must be a positive number of seconds, not {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling_s(self, attempt: int | None = None) -> float:
        """The longest delay retry ``attempt`` (default: the next one) may get."""
        return backoff_ceiling_s(self.attempt if attempt is None else attempt,
                                 self.initial_s, self.max_s)  # fmt: skip

    def delay_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """A delay for retry number ``attempt``, in ``[ceiling/2, ceiling]``; or the peer's
        ``Retry-After`` (from ``parse_retry_after``) when longer, up to 15 minutes."""
        ceiling = self.ceiling_s(attempt)
        delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, HONOURED_RETRY_AFTER_S))
        return delay

    def next_delay(self) -> float:
        """The delay before the next retry in a row; the following one may be longer."""
        delay = self.delay_s(self.attempt)
        self.attempt = min(self.attempt + 1, _MAX_EXPONENT)
        return delay

    def reset(self) -> None:
        """A success: the next failure starts again from ``initial_s``."""
        self.attempt = 0


def parse_retry_after(
    header: str | None, now_s: float, max_s: float = MAX_RETRY_AFTER_S
) -> float | None:
    """Seconds to wait per a ``Retry-After`` header at epoch time ``now_s``; None when the
    header is absent, malformed or asks for more than ``max_s``. Never raises."""
    if not isinstance(header, str):
        return None
    text = header.strip()
    if not text or len(text) > _MAX_HEADER_CHARS:
        return None
    if text.isascii() and text.isdigit():
        seconds = float(int(text))  # at most 64 digits: int() is cheap and exact
        return seconds if seconds <= max_s else None
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # "-0000": RFC 5322's "UTC, zone unknown"
        moment = moment.replace(tzinfo=UTC)
    try:
        seconds = moment.timestamp() - now_s
    except (OverflowError, OSError, ValueError):
        return None
    if not math.isfinite(seconds) or seconds > max_s:
        return None
    return max(0.0, seconds)
