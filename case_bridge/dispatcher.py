"""Drains the outbox to the platform: in order per incident, with retry and backoff.

A command leaves the queue only when the platform has answered it. What an answer means is
the adapter's ``Failure`` (``case_bridge/platform.py``):

- transient (no answer, 5xx, 429, ...): the command waits with backoff
  (``domain.retry.Backoff`` on the row's attempt count) or the platform's ``Retry-After``
  when longer, and the whole pass backs off: new commands cannot get through a failing
  platform either, so the queue is not re-read on every wake-up.
- refused (other 4xx): parked with the platform's reason, counted and visible; an operator
  requeues it once the cause is fixed.
- doubtful (a 2xx we cannot use, a conflict): the platform may have acted, and re-sending
  with the same idempotency key is safe, so it is retried like a transient failure, and
  parked after ``DOUBTFUL_ATTEMPTS`` doubtful answers.
- case final: evidence (or an escalation) reached a case the platform says is closed or
  void. The command cannot be delivered, but its alert must not be lost:
  ``on_case_closed(incident_id, command)`` hands it back to the gateway, which closes the
  incident and either files the alert as a new case (an escalation keeps its higher
  priority) or keeps it with the incident (a closure flag's evidence, a clear), and says
  which: the row is marked ``refiled`` or ``refused_closed``. The handler runs first and the
  row is marked second, so a crash in between calls the handler again for the same command
  after a restart: the handler must be idempotent per ``command.command_id``, its answer
  included. If the handler raises, the row stays pending and is tried again.

A platform that ignores our idempotency key (``honours_idempotency_key`` false) would
file a re-sent open command twice. So before an open command goes to one, its row is marked
``maybe_filed`` (``case_bridge/outbox.py``; committed first, so a crash during the send
leaves the mark), and only an answer that says the platform did not act clears it. A
marked row is looked up first (``find_case`` by our external key): a case found is the
command's case, delivered with that id; only "not there" sends the command again. A lookup
that fails is a failure of the row like any other (retried with backoff, parked when
refused or doubtful too often), never a reason to post again.

Evidence (an attach) to such a platform is marked the same way. A marked attach is looked
up where the adapter offers ``find_evidence`` (``case_bridge/platform.py``): found, it is
delivered; certainly not there, it is sent again. Where the platform cannot be asked, the
delivery setting ``evidence_after_unclear`` decides: ``resend`` (the default; counted
``evidence_resent_unclear``: the platform may hold it twice) or ``park`` for an operator.
An escalation is sent again unmarked: a second raise to the same priority changes
nothing. A possible match, a lookup that cannot be made, or ``park`` leaves a parked row
with its mark, which a requeue parks again; an operator settles it by what the platform
shows (``outbox.resolve_found`` / ``resolve_not_filed``, through ``gateway/api_outbox.py``).

When the platform's circuit breaker is open (``case_bridge/breaker.py``, through
``case_bridge/guarded_platform.py``), the request was not sent: the whole queue waits for
the next probe, and no row counts an attempt.

A void (a suspected duplicate an operator merged into another case) goes to the
duplicate's case like evidence; a platform that cannot void refuses it, and the row parks
with the case to void by hand. A case already closed or void needs no void: the row is
done (counted ``void_case_final``), and nothing is handed back.

An unexpected exception while delivering one row (a bug, a full disk) is logged, counted
and treated as a doubtful answer with reason ``internal: <error>``, for that row only:
other incidents' commands keep flowing. While an incident's command waits, later commands
of the same incident wait behind it, so evidence never reaches the platform before its
case exists and an escalation never overtakes the case it escalates. Those that found no
case (its open parked) are parked too, and pend again once the open is delivered
(``outbox.requeue_caseless``, counted ``requeued_with_case``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from enum import Enum, auto
from typing import Any

from case_bridge import outbox
from case_bridge.breaker import CircuitOpen
from case_bridge.case_model import evidence_body, open_case_body
from case_bridge.codes import ClassCatalog
from case_bridge.dispatch import CaseDispatch
from case_bridge.guarded_platform import DeliverySettings
from case_bridge.platform import (
    CasePlatform,
    Failure,
    PlatformError,
    PossibleMatch,
    usable_case_id,
)
from case_bridge.settings import CaseSettings, RetryPolicy
from domain import Backoff, CaseCommand, CommandKind

log = logging.getLogger(__name__)

# Doubtful answers (and internal errors) one command gets before it is parked.
DOUBTFUL_ATTEMPTS = 5
# Pending rows read per query; a pass pages through all of them.
PAGE_ROWS = 200
VOID_SUMMARY_CHARS = 200  # of the duplicate's latest alert, in a void's note

# Called when the platform says a case is already closed while evidence was on its way:
# the gateway closes the incident and files the stranded alert afresh (True) or keeps it
# with the incident (False). Must be idempotent per command id, answer included (see the
# module docstring).
CaseClosedHandler = Callable[[str, CaseCommand], bool]
# Called with (command, case) after each successful delivery (for printing, metrics).
DeliveredHandler = Callable[[CaseCommand, dict], None]


def void_reason(command: CaseCommand) -> str:
    """The note a voided case carries: why it is void, in words the platform's users read."""
    summary = command.alert.summary[:VOID_SUMMARY_CHARS]
    incident = command.incident_id
    return f"作废: merged as a duplicate into another case (incident {incident}: {summary})"


class Outcome(Enum):
    DONE = auto()  # delivered, or handed back to the gateway (case final)
    HELD = auto()  # this row waits or was parked; other incidents go on
    FAILING = auto()  # the platform is failing: the whole pass backs off


def _now_ms() -> int:
    return int(time.time() * 1000)


def _earliest(first: int | None, second: int | None) -> int | None:
    if first is None or second is None:
        return first if second is None else second
    return min(first, second)


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
        rng: random.Random | None = None,
        dispatch: CaseDispatch | None = None,
        delivery: DeliverySettings | None = None,
    ) -> None:
        """``dispatch``: the class policy, working calendar and unit table a case is filed
        with (``case_model.open_case_body``), and an escalation's deadline is counted by
        (its case's class policy); without it, the settings' plain hours and fallback
        unit. ``delivery``: ``case_platform.delivery`` (its ``evidence_after_unclear``)."""
        self._conn = conn
        self._delivery = delivery or DeliverySettings()
        self._dispatch = dispatch
        self._platform = platform
        self._catalog = catalog
        self._settings = settings
        self._backoff = Backoff(retry.initial_s, retry.max_s, rng)
        self._on_case_closed = on_case_closed
        self._on_delivered = on_delivered
        self._wake = asyncio.Event()
        self._backing_off = False
        self._held_until_ms = 0  # the breaker is open: nothing is sent before this
        # Doubtful answers per pending row since start (a restart counts afresh).
        self._doubtful: dict[int, int] = {}
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
        if now < self._held_until_ms:
            self._backing_off = True
            return self._held_until_ms
        self._backing_off = False
        blocked: set[str] = set()
        next_due: int | None = None
        after_seq = 0
        while rows := outbox.pending(self._conn, after_seq, PAGE_ROWS):
            after_seq = rows[-1].seq
            for row in rows:
                if row.incident_id in blocked:
                    continue
                if row.next_attempt_ms > now:
                    blocked.add(row.incident_id)
                    next_due = _earliest(next_due, row.next_attempt_ms)
                    continue
                outcome, due = await self._attempt(row)
                if outcome is Outcome.DONE:
                    continue
                blocked.add(row.incident_id)
                next_due = _earliest(next_due, due)
                if outcome is Outcome.FAILING:
                    # Back off as a whole rather than hammer a failing platform with every
                    # other incident's command in this same pass.
                    self._backing_off = True
                    return next_due
        return next_due

    async def _attempt(self, row: outbox.OutboxRow) -> tuple[Outcome, int | None]:
        try:
            return await self._deliver(row)
        except Exception as exc:
            self.stats["internal_errors"] += 1
            log.exception("delivering case command %s failed in the gateway", row.command_id,
                          extra={"incident_id": row.incident_id})  # fmt: skip
            return self._doubt(row, f"internal: {type(exc).__name__}: {exc}", Outcome.HELD)

    async def _deliver(self, row: outbox.OutboxRow) -> tuple[Outcome, int | None]:
        command = row.command
        if command is None:
            return self._park(row, f"internal: unreadable outbox row: {row.problem}")
        try:
            if command.kind is CommandKind.OPEN:
                case = await self._file(row, command)
                outbox.link_case(self._conn, command.incident_id, case["id"], _now_ms())
            else:
                case_id = outbox.case_for(self._conn, command.incident_id)
                if case_id is None:
                    return self._park(row, outbox.NO_CASE)
                case = await self._update(row, case_id, command)
        except PlatformError as exc:
            return self._failed(row, command, exc)
        outbox.mark_delivered(self._conn, row.seq, _now_ms())
        self._doubtful.pop(row.seq, None)
        self.stats[f"delivered_{command.kind}"] += 1
        if command.kind is CommandKind.OPEN:  # what waited for this case may go now
            self.stats["requeued_with_case"] += outbox.requeue_caseless(
                self._conn, command.incident_id
            )
        if self._on_delivered:
            try:
                self._on_delivered(command, case)
            except Exception:  # the row is delivered; a reporting hook must not undo that
                self.stats["handler_errors"] += 1
                log.exception("on_delivered failed for %s", command.command_id)
        return Outcome.DONE, None

    async def _update(
        self, row: outbox.OutboxRow, case_id: str, command: CaseCommand
    ) -> dict[str, Any]:
        """A filed case's evidence, escalation or void."""
        if command.kind is CommandKind.VOID:
            return await self._platform.void_case(case_id, void_reason(command), command.command_id)
        body = evidence_body(command, self._settings, self._dispatch, command.case_class)

        def send() -> Awaitable[dict[str, Any]]:
            return self._platform.add_evidence(case_id, body, command.command_id)

        if self._platform.honours_idempotency_key or command.kind is CommandKind.ESCALATE:
            return await send()
        if row.maybe_filed:
            found = await self._find_evidence(case_id, body)
            if found:
                self.stats["evidence_found_by_lookup"] += 1
                return {"id": case_id}
            if found is None and self._delivery.evidence_after_unclear == "park":
                raise PlatformError(
                    f"evidence sent to case {case_id} without a clear answer, and the platform"
                    " cannot be asked whether it has it: look on the platform and resolve",
                    Failure.REFUSED,
                )
            if found is None:
                self.stats["evidence_resent_unclear"] += 1
        return await self._send_marked(row, send)

    async def _find_evidence(self, case_id: str, body: dict[str, Any]) -> bool | None:
        """Whether the case holds the evidence; None where the platform cannot be asked:
        an adapter without ``find_evidence``, bare or behind ``GuardedPlatform`` (whose
        ``find_evidence`` is None then). ``evidence_lookups`` counts the lookups asked."""
        find = getattr(self._platform, "find_evidence", None)
        if find is None:
            return None
        self.stats["evidence_lookups"] += 1
        try:
            return await find(case_id, body)
        except CircuitOpen:
            raise
        except PlatformError as exc:
            raise self._lookup_failed(exc) from exc

    async def _send_marked(
        self, row: outbox.OutboxRow, send: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """``send`` with the row marked ``maybe_filed`` first (committed before the send),
        the mark cleared when the answer says the platform did not act."""
        if not row.maybe_filed:
            outbox.mark_maybe_filed(self._conn, row.seq, True)
        try:
            return await send()
        except PlatformError as exc:
            if not exc.may_have_acted:
                outbox.mark_maybe_filed(self._conn, row.seq, False)
            raise

    async def _file(self, row: outbox.OutboxRow, command: CaseCommand) -> dict[str, Any]:
        """The case an open command files, or the one an earlier unclear send of it filed
        on a platform that ignores idempotency keys (see the module docstring)."""
        body = open_case_body(command, self._catalog, self._settings, self._dispatch)

        def send() -> Awaitable[dict[str, Any]]:
            return self._platform.open_case(body, command.command_id)

        if self._platform.honours_idempotency_key:
            return await send()
        if row.maybe_filed:
            case_id = await self._look_up(body)
            if case_id is not None:
                self.stats["found_by_lookup"] += 1
                log.warning("case command %s: already filed as %s", command.command_id, case_id,
                            extra={"incident_id": command.incident_id})  # fmt: skip
                return {"id": case_id}
        return await self._send_marked(row, send)

    async def _look_up(self, body: dict[str, Any]) -> str | None:
        self.stats["lookups"] += 1
        try:
            case_id = await self._platform.find_case(body["external_key"], body)
        except CircuitOpen:
            raise
        except PlatformError as exc:
            raise self._lookup_failed(exc) from exc
        if case_id is not None and usable_case_id(case_id) is None:
            self.stats["lookup_failures"] += 1
            raise PlatformError(
                f"looking up an unclear send: unusable case id {repr(case_id)[:80]}",
                Failure.DOUBTFUL,
            )
        return case_id

    def _lookup_failed(self, exc: PlatformError) -> PlatformError:
        """A failed lookup as the row's failure, saying so. A possible match parks at once:
        asking again finds the same candidate, and only an operator can tell (the outbox
        API's resolve: this case, or not filed)."""
        self.stats["lookup_failures"] += 1
        reason = f"looking up an unclear send: {exc.reason}"
        if isinstance(exc, PossibleMatch):
            return PlatformError(f"{reason}; settle it by hand (resolve)", Failure.REFUSED)
        return PlatformError(reason, exc.failure, retry_after_s=exc.retry_after_s)

    def _failed(
        self, row: outbox.OutboxRow, command: CaseCommand, exc: PlatformError
    ) -> tuple[Outcome, int | None]:
        if isinstance(exc, CircuitOpen):
            return self._hold(exc)
        if exc.failure is Failure.CASE_FINAL and command.kind is CommandKind.VOID:
            return self._void_moot(row, command, exc)
        if exc.failure is Failure.CASE_FINAL and command.kind is not CommandKind.OPEN:
            return self._hand_back(row, command, exc)
        if exc.failure is Failure.TRANSIENT:
            return self._retry(row, exc.reason, exc.retry_after_s, Outcome.FAILING)
        if exc.failure is Failure.DOUBTFUL:
            return self._doubt(row, exc.reason, Outcome.FAILING)
        return self._park(row, exc.reason)

    def _hold(self, exc: CircuitOpen) -> tuple[Outcome, int | None]:
        """Nothing was sent: hold the whole queue until the breaker's next probe, without
        counting an attempt against the row."""
        # Rounded up (and a millisecond for the truncated now): the pass after the hold
        # must find the breaker ready for its probe.
        self._held_until_ms = _now_ms() + math.ceil((exc.retry_after_s or 0) * 1000) + 1
        self.stats["held_by_breaker"] += 1
        return Outcome.FAILING, self._held_until_ms

    def _hand_back(
        self, row: outbox.OutboxRow, command: CaseCommand, exc: PlatformError
    ) -> tuple[Outcome, int | None]:
        """The case is final: give the alert back to the gateway, then retire the row as
        re-filed or, when the gateway filed nothing again, refused."""
        refiled = self._on_case_closed(command.incident_id, command)
        done = "alert handed back to be re-filed" if refiled else "refused, nothing re-filed"
        reason = f"case {exc.case_status} on the platform; {done}"
        outbox.mark_case_final(self._conn, row.seq, refiled, reason, _now_ms())
        self._doubtful.pop(row.seq, None)
        self.stats["refiled" if refiled else "refused_closed"] += 1
        log.warning("case command %s: %s", command.command_id, reason,
                    extra={"incident_id": command.incident_id})  # fmt: skip
        return Outcome.DONE, None

    def _void_moot(
        self, row: outbox.OutboxRow, command: CaseCommand, exc: PlatformError
    ) -> tuple[Outcome, int | None]:
        """The duplicate's case is final already (closed, or void on a platform that says
        so this way): it will not be handled twice, which is all a void is for."""
        outbox.mark_delivered(self._conn, row.seq, _now_ms())
        self._doubtful.pop(row.seq, None)
        self.stats["void_case_final"] += 1
        log.warning("case command %s: case %s on the platform; nothing to void",
                    command.command_id, exc.case_status,
                    extra={"incident_id": command.incident_id})  # fmt: skip
        return Outcome.DONE, None

    def _doubt(
        self, row: outbox.OutboxRow, reason: str, outcome: Outcome
    ) -> tuple[Outcome, int | None]:
        doubts = self._doubtful.get(row.seq, 0) + 1
        self.stats["doubtful"] += 1
        if doubts >= DOUBTFUL_ATTEMPTS:
            return self._park(row, reason)
        self._doubtful[row.seq] = doubts
        return self._retry(row, reason, None, outcome)

    def _retry(
        self, row: outbox.OutboxRow, reason: str, retry_after_s: float | None, outcome: Outcome
    ) -> tuple[Outcome, int | None]:
        delay = self._backoff.delay_s(row.attempts, retry_after_s)
        due = _now_ms() + int(delay * 1000)
        outbox.schedule_retry(self._conn, row.seq, due, reason)
        self.stats["retries"] += 1
        self.last_error = reason
        log.warning("case platform: %s; retry %s in %.1f s", reason, row.command_id, delay,
                    extra={"incident_id": row.incident_id})  # fmt: skip
        return outcome, due

    def _park(self, row: outbox.OutboxRow, reason: str) -> tuple[Outcome, int | None]:
        outbox.park(self._conn, row.seq, reason)
        self._doubtful.pop(row.seq, None)
        self.stats["parked"] += 1
        self.last_error = reason
        log.error("case command %s parked: %s", row.command_id, reason,
                  extra={"incident_id": row.incident_id})  # fmt: skip
        return Outcome.HELD, None
