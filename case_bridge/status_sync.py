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

That cursor is durable (``outbox.save_sync_cursor``, after each pass read to its last
page) and read back before the first pass after a start. It is kept per platform
(``cursor_name``: the adapter and its URL, hashed), since a cursor is a time or token in
one platform's terms: a gateway switched to another adapter or URL starts there as on a
first start, and finds the old platform's cursor again if switched back. Only a first
start on a platform asks with no cursor, which an adapter answers from its look-back
(Open311's ``lookup_days``): a gateway down for longer than that still lists every change
since its last pass. A store that refuses to read the cursor skips the pass (counted,
``store_failures``; tried again next pass): listing from the look-back instead could miss
a closure. One that refuses to keep it is counted too; the pass stands, and the next one
saves again.

Each status of a filed case is kept in the store before it is handed over
(``outbox.record_status``: the console shows the case's status and its history), and so is
each one a signed webhook brings (``pushed``, source ``webhook``): the same status learnt
both ways is kept once. A store that refuses to keep one cuts the pass short where it is
(counted, ``store_failures``): the next pass reads the same page again, so no status is
skipped, and the handlers, idempotent, may see a case twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from case_bridge import outbox
from case_bridge.platform import (
    FINAL_STATUSES,
    CasePage,
    CasePlatform,
    CaseStatus,
    PlatformError,
)

log = logging.getLogger(__name__)

# Pages read in one pass; a longer backlog is read on by the following passes.
MAX_PAGES_PER_PASS = 20


def cursor_name(platform_id: str) -> str:
    """The name in ``sync_cursors`` of the cursor for one platform (``platform_id``: the
    adapter and its URL), hashed so that the name is bounded and a URL's credentials, if
    it carries any, are not written to the store."""
    return "changed_cases:" + hashlib.sha256(platform_id.encode()).hexdigest()[:32]


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
        self._cursor_name = cursor_name(platform.platform_id)
        self._interval_s = interval_s
        self._on_case_final = on_case_final
        self._on_case_status = on_case_status
        self._since: str | None = None  # where the current pass lists from
        self._after: str | None = None  # the next page of the current pass
        self._next_since: str | None = None  # where the next pass will list from
        self._cursor_read = False  # the saved cursor was read back since the start
        self.passes = 0  # passes that read to the last page
        self.failures = 0  # passes cut short by the platform
        self.skipped = 0  # listed items that were unusable
        self.handler_errors = 0
        self.store_failures = 0  # the store refused a status (pass cut short) or the cursor

    def stats(self) -> dict[str, Any]:
        return {
            "passes": self.passes,
            "failures": self.failures,
            "skipped": self.skipped,
            "handler_errors": self.handler_errors,
            "store_failures": self.store_failures,
        }

    def pushed(self, case_id: str, status: str, updated_at: str) -> str | None:
        """A status a signed webhook brought (gateway/api_platform_events.py), kept as a
        polled one is; the case's incident, None for a case the gateway did not file. A
        store that refuses raises, so the event is answered 503 and the platform retries."""
        incident_id = outbox.incident_for(self._conn, case_id)
        if incident_id is not None:
            outbox.record_status(self._conn, case_id, status, updated_at, "webhook", _wall_ms())
        return incident_id

    async def run(self) -> None:
        while True:
            await self.sync_once()
            await asyncio.sleep(self._interval_s)

    async def sync_once(self) -> None:
        """One pass (at most ``MAX_PAGES_PER_PASS`` pages); never raises for the platform."""
        if not self._read_cursor():
            return
        for _ in range(MAX_PAGES_PER_PASS):
            try:
                page = await self._platform.changed_cases(self._since, self._after)
            except PlatformError as exc:
                self.failures += 1
                log.warning("status sync failed: %s", exc.reason)
                return
            try:
                self._take(page)
            except outbox.DatabaseError as exc:
                self.store_failures += 1
                log.warning("status sync: the store refused a case status (%s): read again", exc)
                return
            if page.next_after is None:
                if self._next_since is not None:
                    self._since = self._next_since
                self._after = self._next_since = None
                self.passes += 1
                self._save_cursor()
                return
            self._after = page.next_after

    def _read_cursor(self) -> bool:
        """The saved cursor, once after the start; False: the store refused (no pass)."""
        if self._cursor_read:
            return True
        try:
            self._since = outbox.sync_cursor(self._conn, self._cursor_name)
        except outbox.DatabaseError as exc:
            self.store_failures += 1
            log.warning("status sync: the store refused its cursor (%s): no pass yet", exc)
            return False
        self._cursor_read = True
        return True

    def _save_cursor(self) -> None:
        if self._since is None:  # nothing listed since a first start: nothing to keep
            return
        try:
            outbox.save_sync_cursor(self._conn, self._cursor_name, self._since)
        except outbox.DatabaseError as exc:
            self.store_failures += 1
            log.warning("status sync: the store refused its cursor (%s): saved next pass", exc)

    def _take(self, page: CasePage) -> None:
        if self._after is None and page.next_since is not None:  # the first page of a pass
            self._next_since = page.next_since
        for case in page.cases:
            incident_id = outbox.incident_for(self._conn, case.id)
            if incident_id is not None:
                self._hand_over(incident_id, case)
            if page.next_since is None and (
                self._next_since is None or case.updated_at > self._next_since
            ):
                self._next_since = case.updated_at
        if page.skipped:  # counted once the page is taken: a page read again counts once
            self.skipped += page.skipped
            log.warning("status sync: %d listed case(s) unusable, skipped", page.skipped)

    def _hand_over(self, incident_id: str, case: CaseStatus) -> None:
        """Keep the status (a refusal raises: the page is read again), then hand it over."""
        outbox.record_status(self._conn, case.id, case.status, case.updated_at, "poll", _wall_ms())
        final = case.status in FINAL_STATUSES
        handler = self._on_case_final if final else self._on_case_status
        if handler is None:
            return
        try:
            handler(incident_id, case.status)
        except Exception:
            self.handler_errors += 1
            log.exception(
                "case %s %s: handling incident %s failed", case.id, case.status, incident_id
            )


def _wall_ms() -> int:
    return int(time.time() * 1000)
