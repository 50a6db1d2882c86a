"""Timestamps in the one format the platform stores, so ISO strings compare as times.

Every stored time is UTC with a fixed six-digit fraction (``...T08:00:00.000000+00:00``):
with one width and one zone, SQLite can filter ``updated_at >= since`` as plain text.
"""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current time in UTC; one call per operation keeps ids and history consistent."""
    return datetime.now(UTC)


def to_iso(moment: datetime) -> str:
    """Format an aware datetime in the stored form (UTC, microseconds, explicit offset)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_iso(value: str) -> datetime:
    """Parse ISO 8601 that names its zone; raise ValueError otherwise.

    A deadline without a zone is ambiguous by eight hours between UTC and Beijing time,
    so the platform refuses it rather than guess.
    """
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise ValueError("must include a time zone (e.g. +08:00 or Z)")
    return moment
