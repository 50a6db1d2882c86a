"""What the serial adapters hand to the gateway, from their own threads.

Each result comes with where it was read (``serial:<path>`` for a line port,
``modbus:<path>#<unit>`` for a slave) and the raw bytes it was decoded from, so a
rejected sentence or register set lands in the dead-letter table as it was received.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from devices.limits import shown
from devices.rejections import Reason, Rejection
from domain import Reading

log = logging.getLogger(__name__)

Result = Reading | Rejection
# (origin, raw bytes, result); called from an adapter thread, so it must not block.
OnResult = Callable[[str, bytes, Result], None]
Clock = Callable[[], int]  # epoch milliseconds
T = TypeVar("T")


def decoded(decode: Callable[[], T]) -> T | Rejection:
    """``decode()``, or an ``internal`` rejection naming the error it raised: a decoder's bug
    costs one counted dead letter, never the port's thread nor a silently lost reading."""
    try:
        return decode()
    except Exception as exc:
        log.exception("serial decoder failed")
        return Rejection(Reason.INTERNAL, f"{type(exc).__name__}: {shown(str(exc), 200)}")
