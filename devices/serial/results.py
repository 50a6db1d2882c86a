"""What the serial adapters hand to the gateway, from their own threads.

Each result comes with where it was read (``serial:<path>`` for a line port,
``modbus:<path>#<unit>`` for a slave) and the raw bytes it was decoded from, so a
rejected sentence or register set lands in the dead-letter table as it was received.
"""

from __future__ import annotations

from collections.abc import Callable

from devices.rejections import Rejection
from domain import Reading

Result = Reading | Rejection
# (origin, raw bytes, result); called from an adapter thread, so it must not block.
OnResult = Callable[[str, bytes, Result], None]
Clock = Callable[[], int]  # epoch milliseconds
