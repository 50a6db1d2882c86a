"""Query parameters the API's lists share: instants given as epoch milliseconds or as
ISO 8601 with a zone, bounded so that no text can make a handler fail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import HTTPException

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def instant_ms(name: str, text: str | None, default: int) -> int:
    """Epoch milliseconds, or ISO 8601 with a zone: a zoneless time would silently mean the
    server's zone, which is rarely the operator's."""
    if text is None:
        return default
    if text.isascii() and text.isdigit():
        if len(text) > len(str(MAX_MS)):  # and int() of 5,000 digits would raise
            raise HTTPException(400, f"{name}: {len(text)} digits is out of range")
        ms = int(text)
    else:
        try:
            instant = datetime.fromisoformat(text)
        except ValueError:
            hint = " (send '+' in a URL as %2B)" if " " in text else ""
            raise HTTPException(
                400, f"{name}: expected epoch milliseconds or ISO 8601, got {text!r}{hint}"
            ) from None
        if instant.tzinfo is None:
            raise HTTPException(400, f"{name}: {text!r} has no zone; add Z or an offset")
        ms = (instant - _EPOCH) // timedelta(milliseconds=1)
    if not 0 <= ms <= MAX_MS:
        raise HTTPException(400, f"{name}: {text!r} is out of range")
    return ms
