"""The wall clock as the store and the API keep times: integer milliseconds since the epoch.

One helper so that every router, the audit log and the user store read "now" the same way,
and a test can hand any of them another clock of the same shape (``Callable[[], int]``).
"""

from __future__ import annotations

import time


def wall_ms() -> int:
    return int(time.time() * 1000)
