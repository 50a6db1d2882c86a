"""Silences (maintenance windows): operator-made, time-boxed matchers on alert labels.

A silence is in force over ``[starts_ms, ends_ms)`` of event time. An alert that would
file a new case while a silence matching its labels is in force is held instead (stored
with ``held_by = "silence:<id>"``, no case) until the silence ends; see
:mod:`rules.flow` for what happens then. Removing a silence ends it now (or, when it has
not started yet, at its start, so it never holds anything) and keeps it in the history.

What an operator may ask for is bounded here, in one place, for the API and the CLI
alike: the matchers (:mod:`rules.alerting`), the author and reason (required, bounded),
the duration (``SilenceLimits.max_duration_s``) and the times (epoch milliseconds up to
the year 9999).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from rules.alerting import Matchers, SilenceLimits, matches

MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
Instant = Annotated[int, Field(ge=0, le=MAX_MS)]
# Shown in lists and logs: no control characters (a forged line or terminal escape).
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Author = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=_PRINTABLE)
]
Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500, pattern=_PRINTABLE)
]
Status = Literal["pending", "active", "expired"]
STATUSES: tuple[str, ...] = Status.__args__  # type: ignore[attr-defined]


class SilenceError(ValueError):
    """A silence request that cannot be honoured; the message names the field."""


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    matchers: dict[str, str]
    author: str
    reason: str
    starts_ms: int
    ends_ms: int
    created_ms: int
    removed_ms: int | None = None
    # Who extended or removed it, when and why, oldest first.
    changes: tuple[dict[str, Any], ...] = field(default=())

    def in_force(self, ts_ms: int) -> bool:
        return self.starts_ms <= ts_ms < self.ends_ms

    def silences(self, labels: dict[str, str], ts_ms: int) -> bool:
        return self.in_force(ts_ms) and matches(self.matchers, labels)

    def status(self, now_ms: int) -> Status:
        if now_ms >= self.ends_ms or self.removed_ms is not None:
            return "expired"
        return "pending" if now_ms < self.starts_ms else "active"

    def to_dict(self, now_ms: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status(now_ms),
            "matchers": self.matchers,
            "author": self.author,
            "reason": self.reason,
            "starts_ms": self.starts_ms,
            "ends_ms": self.ends_ms,
            "created_ms": self.created_ms,
            "removed_ms": self.removed_ms,
            "changes": list(self.changes),
        }


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Ending(_Request):
    """``ends_ms`` or ``duration_s``, exactly one."""

    ends_ms: Instant | None = None
    duration_s: int | None = Field(None, ge=1, le=366 * 86_400)

    @model_validator(mode="after")
    def _one_end(self) -> Self:
        if (self.ends_ms is None) == (self.duration_s is None):
            raise ValueError("give exactly one of ends_ms and duration_s")
        return self


class NewSilence(_Ending):
    """What an operator sends to create a silence; ``starts_ms`` defaults to now and
    ``duration_s`` counts from the start."""

    matchers: Matchers
    author: Author
    reason: Reason
    starts_ms: Instant | None = None

    def window(self, now_ms: int, limits: SilenceLimits) -> tuple[int, int]:
        """``(starts_ms, ends_ms)``, checked against ``now_ms`` and the limits."""
        starts = now_ms if self.starts_ms is None else self.starts_ms
        ends = self.ends_ms if self.duration_s is None else starts + self.duration_s * 1000
        assert ends is not None  # _one_end
        field_name = "ends_ms" if self.duration_s is None else "duration_s"
        if ends <= now_ms:
            raise SilenceError(f"{field_name}: the silence would end before now ({now_ms})")
        _check_span(field_name, starts, ends, limits)
        return starts, ends


class Extension(_Ending):
    """A silence's new end (later than its current one; ``duration_s`` counts from now),
    with who and why."""

    author: Author
    reason: Reason

    def new_end(self, silence: Silence, now_ms: int, limits: SilenceLimits) -> int:
        if silence.status(now_ms) == "expired":
            raise SilenceError(f"silence {silence.id} has expired: create a new one")
        ends = self.ends_ms if self.duration_s is None else now_ms + self.duration_s * 1000
        assert ends is not None  # _one_end
        field_name = "ends_ms" if self.duration_s is None else "duration_s"
        if ends <= silence.ends_ms:
            raise SilenceError(
                f"{field_name}: an extension must end after the current end"
                f" ({silence.ends_ms}); remove the silence to end it early"
            )
        _check_span(field_name, silence.starts_ms, ends, limits)
        return ends


def _check_span(field_name: str, starts: int, ends: int, limits: SilenceLimits) -> None:
    if ends > MAX_MS:
        raise SilenceError(f"{field_name}: the end is beyond the year 9999")
    if ends <= starts:
        raise SilenceError(f"{field_name}: the silence must end after it starts ({starts})")
    if ends - starts > limits.max_duration_s * 1000:
        raise SilenceError(
            f"{field_name}: a silence lasts at most {limits.max_duration_s} s"
            f" (alerting.silences.max_duration_s); this one {(ends - starts) // 1000} s"
        )
