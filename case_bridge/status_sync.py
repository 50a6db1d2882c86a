"""Brings case status back from the platform: a closed or voided case closes its incident,
which re-arms the devices behind it (the next occurrence files a new case)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable

from case_bridge import outbox
from case_bridge.platform import CasePlatform, PlatformError

log = logging.getLogger(__name__)

FINAL_STATUSES = {"closed", "void"}


class StatusSync:
    def __init__(
        self,
        conn: sqlite3.Connection,
        platform: CasePlatform,
        interval_s: float,
        on_case_final: Callable[[str, str], None],
    ) -> None:
        self._conn = conn
        self._platform = platform
        self._interval_s = interval_s
        self._on_case_final = on_case_final
        self._cursor: str | None = None
        self.failures = 0

    async def run(self) -> None:
        while True:
            await self.sync_once()
            await asyncio.sleep(self._interval_s)

    async def sync_once(self) -> None:
        try:
            cases = await self._platform.cases_changed_since(self._cursor)
        except PlatformError as exc:
            self.failures += 1
            log.warning("status sync failed: %s", exc.reason)
            return
        for case in cases:
            if case.get("status") in FINAL_STATUSES:
                incident_id = outbox.incident_for(self._conn, case["id"])
                if incident_id is not None:
                    self._on_case_final(incident_id, case["status"])
            updated = case.get("updated_at")
            if updated and (self._cursor is None or updated > self._cursor):
                self._cursor = updated
