"""Brings case status back from the platform: a closed or voided case goes to
``on_case_final`` (the gateway closes its incident: re-armed, or flagged when its sensors
still see the problem), any other status of a filed case to ``on_case_status`` (the
gateway checks the problem at verification, 核查). Both get the incident id and the status.
A case listed again in a status already handled is handed over again: the handlers are
idempotent (a closed incident stays closed, a flag stands once), so a cursor that lists a
case twice, or a restart, never acts twice.

The platform lists changed cases a page at a time. A pass asks for every case changed since
the last pass and follows the pages; it remembers where it is, so a pass cut short by an
error resumes at the same page. When the pass is done, the next one asks from the
``next_since`` the platform gave on the pass's first page (a time taken before the listing,
so a case changed while the pages were read is listed again, never missed), or, from a
platform that does not say, from the newest ``updated_at`` seen. Listed items the adapter
cannot use are counted and skipped; a handler that fails on one case is logged and
counted, and the pass goes on.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from case_bridge import outbox
from case_bridge.platform import FINAL_STATUSES, CasePage, CasePlatform, PlatformError

log = logging.getLogger(__name__)

# Pages read in one pass; a longer backlog is read on by the following passes.
MAX_PAGES_PER_PASS = 20


class StatusSync:
    def __init__(
        self,
        conn: sqlite3.Connection,
        platform: CasePlatform,
        interval_s: float,
        on_case_final: Callable[[str, str], None],
        on_case_status: Callable[[str, str], None] | None = None,
    ) -> None:
        self._conn = conn
        self._platform = platform
        self._interval_s = interval_s
        self._on_case_final = on_case_final
        self._on_case_status = on_case_status
        self._since: str | None = None  # where the current pass lists from
        self._after: str | None = None  # the next page of the current pass
        self._next_since: str | None = None  # where the next pass will list from
        self.passes = 0  # passes that read to the last page
        self.failures = 0  # passes cut short by the platform
        self.skipped = 0  # listed items that were unusable
        self.handler_errors = 0

    def stats(self) -> dict[str, Any]:
        return {
            "passes": self.passes,
            "failures": self.failures,
            "skipped": self.skipped,
            "handler_errors": self.handler_errors,
        }

    async def run(self) -> None:
        while True:
            await self.sync_once()
            await asyncio.sleep(self._interval_s)

    async def sync_once(self) -> None:
        """One pass (at most ``MAX_PAGES_PER_PASS`` pages); never raises for the platform."""
        for _ in range(MAX_PAGES_PER_PASS):
            try:
                page = await self._platform.changed_cases(self._since, self._after)
            except PlatformError as exc:
                self.failures += 1
                log.warning("status sync failed: %s", exc.reason)
                return
            self._take(page)
            if page.next_after is None:
                if self._next_since is not None:
                    self._since = self._next_since
                self._after = self._next_since = None
                self.passes += 1
                return
            self._after = page.next_after

    def _take(self, page: CasePage) -> None:
        if page.skipped:
            self.skipped += page.skipped
            log.warning("status sync: %d listed case(s) unusable, skipped", page.skipped)
        if self._after is None and page.next_since is not None:  # the first page of a pass
            self._next_since = page.next_since
        for case in page.cases:
            if case.status in FINAL_STATUSES:
                self._hand_over(self._on_case_final, case.id, case.status)
            elif self._on_case_status is not None:
                self._hand_over(self._on_case_status, case.id, case.status)
            if page.next_since is None and (
                self._next_since is None or case.updated_at > self._next_since
            ):
                self._next_since = case.updated_at

    def _hand_over(self, handler: Callable[[str, str], None], case_id: str, status: str) -> None:
        incident_id = outbox.incident_for(self._conn, case_id)
        if incident_id is None:
            return
        try:
            handler(incident_id, status)
        except Exception:
            self.handler_errors += 1
            log.exception("case %s %s: handling incident %s failed", case_id, status, incident_id)
