"""Drains the outbox to the platform: in order per incident, with retry and backoff.

A command is removed from the queue only when the platform has answered it. Retryable
failures wait with exponential backoff and jitter (or the platform's ``Retry-After``);
while an incident's command waits, later commands of the same incident wait behind it, so
evidence never reaches the platform before its case exists. Commands of other incidents
keep flowing while the platform answers; when it fails, the whole pass backs off.
Refused commands are parked with their reason, counted and visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable

from case_bridge import outbox
from case_bridge.case_model import evidence_body, open_case_body
from case_bridge.codes import ClassCatalog
from case_bridge.platform import CasePlatform, PlatformError
from case_bridge.settings import CaseSettings, RetryPolicy
from domain import CaseCommand, CommandKind

log = logging.getLogger(__name__)

# Called when the platform says a case is already closed while evidence was on its way:
# the gateway closes the incident and files the stranded alert afresh.
CaseClosedHandler = Callable[[str, CaseCommand], None]
# Called with (incident_id, case) after each successful delivery (for printing, metrics).
DeliveredHandler = Callable[[CaseCommand, dict], None]


def _now_ms() -> int:
    return int(time.time() * 1000)


class OutboxDispatcher:
    def __init__(
        self,
        conn: sqlite3.Connection,
        platform: CasePlatform,
        catalog: ClassCatalog,
        settings: CaseSettings,
        retry: RetryPolicy,
        on_case_closed: CaseClosedHandler,
        on_delivered: DeliveredHandler | None = None,
    ) -> None:
        self._conn = conn
        self._platform = platform
        self._catalog = catalog
        self._settings = settings
        self._retry = retry
        self._on_case_closed = on_case_closed
        self._on_delivered = on_delivered
        self._wake = asyncio.Event()
        self._backing_off = False
        self.stats: Counter[str] = Counter()
        self.last_error = ""

    def wake(self) -> None:
        """New commands were committed: deliver now rather than at the next tick."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            next_due = await self.drain_once()
            if self._backing_off:
                # New commands cannot go through a failing platform either: sleep, do not
                # re-read the queue on every wake-up.
                await asyncio.sleep(max(0.0, ((next_due or 0) - _now_ms()) / 1000))
                continue
            timeout = 1.0
            if next_due is not None:
                timeout = min(timeout, max(0.0, (next_due - _now_ms()) / 1000))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def drain_once(self) -> int | None:
        """Try every due command once; return when the earliest waiting one is due."""
        now = _now_ms()
        self._backing_off = False
        blocked: set[str] = set()
        next_due: int | None = None
        for row in outbox.pending(self._conn):
            incident_id = row.command.incident_id
            if incident_id in blocked:
                continue
            if row.next_attempt_ms > now:
                blocked.add(incident_id)
                next_due = (
                    row.next_attempt_ms if next_due is None else min(next_due, row.next_attempt_ms)
                )
                continue
            if not await self._deliver(row):
                blocked.add(incident_id)
                due = outbox_due(self._conn, row.seq)
                if due is not None:
                    # The platform is failing: back off as a whole rather than hammer it
                    # with every other incident's command in this same pass.
                    self._backing_off = True
                    return due if next_due is None else min(next_due, due)
        return next_due

    async def _deliver(self, row: outbox.OutboxRow) -> bool:
        command = row.command
        try:
            if command.kind is CommandKind.OPEN:
                case = await self._platform.open_case(
                    open_case_body(command, self._catalog, self._settings), command.command_id
                )
                outbox.link_case(self._conn, command.incident_id, case["id"], _now_ms())
            else:
                case_id = outbox.case_for(self._conn, command.incident_id)
                if case_id is None:
                    self._park(row, "no case for this incident: its open command was parked")
                    return False
                case = await self._platform.add_evidence(
                    case_id, evidence_body(command, self._settings), command.command_id
                )
        except PlatformError as exc:
            if exc.reason.startswith("HTTP 409") and command.kind is not CommandKind.OPEN:
                self._park(row, f"case closed on the platform; alert re-filed: {exc.reason}")
                self._on_case_closed(command.incident_id, command)
                return True
            if exc.retryable:
                self._schedule_retry(row, exc)
            else:
                self._park(row, exc.reason)
            return False
        outbox.mark_delivered(self._conn, row.seq, _now_ms())
        self.stats[f"delivered_{command.kind}"] += 1
        if self._on_delivered:
            self._on_delivered(command, case)
        return True

    def _schedule_retry(self, row: outbox.OutboxRow, exc: PlatformError) -> None:
        ceiling = min(self._retry.max_s, self._retry.initial_s * 2 ** min(row.attempts, 30))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        if exc.retry_after_s is not None:
            delay = min(self._retry.max_s, max(delay, exc.retry_after_s))
        outbox.schedule_retry(self._conn, row.seq, _now_ms() + int(delay * 1000), exc.reason)
        self.stats["retries"] += 1
        self.last_error = exc.reason
        log.warning(
            "case platform: %s; retry %s in %.1f s", exc.reason, row.command.command_id, delay
        )

    def _park(self, row: outbox.OutboxRow, reason: str) -> None:
        outbox.park(self._conn, row.seq, reason)
        self.stats["parked"] += 1
        self.last_error = reason
        log.error("case command %s parked: %s", row.command.command_id, reason)


def outbox_due(conn: sqlite3.Connection, seq: int) -> int | None:
    row = conn.execute(
        "SELECT next_attempt_ms FROM outbox WHERE seq = ? AND state = 'pending'", (seq,)
    ).fetchone()
    return row[0] if row else None
