"""Closure check (核查): a case that reaches verification, or is closed, while its sensors or
cameras still see the problem is flagged with that evidence instead of passing as solved.

Without it, a case closed while a bin is still full re-arms the bin's alert, the alert fires
again at the next reading, and a second case for the same bin is filed later without anyone
being told that the first was closed unsolved. With it:

- **verification** (``verifying``, 核查): the monitoring centre is checking the result. If any
  alert of the incident still fires (``Pipeline.persisting``: the latest transition of each
  of its keys was not a clear), the case gets that evidence, flagged: the current reading of
  each sensor (its latest stored reading, values named with their units as the devices send
  them, and its time), an "after" photo of each camera zone (its current frame, and the
  zone's "before" frame, through the evidence writer, with their SHA-256 on the case). The
  verifier sees it before closing; the flag stands until the case is sent back (返工:
  any other open status), so a case listed again at verification is not flagged twice.
- **final** (closed, void): if the problem persists the incident closes flagged, with the
  same evidence sent to the case, and its firing alerts are *not* re-armed
  (``Pipeline.flag``): no new case is filed while the problem persists; once it clears,
  the next occurrence files a new case as usual. The bundled platform records the flagged
  evidence on the final case as a note (history ``closure_check``, 复核提示) without
  changing its status. A platform that refuses evidence on a final case (Open311, mapped
  REST) hands the flag's commands back (``absorbs``): they are not re-filed (the outbox row
  ends ``refused_closed``), the flag stays on the gateway's incident (API, metrics, log).
  Otherwise the incident closes and re-arms as before.

Each evidence alert carries ``closure_check`` (the status checked at), which the case
bridge sends as the item's ``flag`` and ``checked_status`` (``case_bridge/case_model.py``),
so a platform can tell the flag from a new sighting.

The flags are durable: each is recorded on the incident and committed with the evidence's
outbox rows, so a restart neither loses nor repeats one. Counted by status
(``citygw_closure_flags_total``) and logged.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from enum import Enum, auto

from case_bridge.platform import FINAL_STATUSES
from domain import Alert, CaseCommand, Priority
from gateway.pipeline import Pipeline

log = logging.getLogger(__name__)

# Case statuses at which the problem is checked while the case is still open.
CHECKED_STATUSES = frozenset({"verifying"})
STATUS_NAMES = {"verifying": "核查", "closed": "结案", "void": "作废"}
# A flag's summary stays well within a platform's evidence item.
MAX_VALUES_SHOWN = 8

# A camera alert with a new picture of its zone taken now (as it is when none can be had).
AfterPhoto = Callable[[Alert, int], Alert]


class Action(Enum):
    NOTHING = auto()
    FLAG = auto()  # attach the evidence, flagged; the incident stays open
    FLAG_AND_CLOSE = auto()  # the same, and close without re-arming what still fires
    CLOSE = auto()  # close and re-arm, as before closure checks
    UNFLAG = auto()  # the case went back to be handled: check the next verification again


def decide(status: str, persists: bool, standing_flag: str) -> Action:
    """What a case status means for an open incident whose problem ``persists`` (or not),
    with the status at which its standing flag was raised ("" for none)."""
    if status in FINAL_STATUSES:
        return Action.FLAG_AND_CLOSE if persists else Action.CLOSE
    if status in CHECKED_STATUSES:
        return Action.FLAG if persists and standing_flag != status else Action.NOTHING
    return Action.UNFLAG if standing_flag else Action.NOTHING


class ClosureCheck:
    """Acts on case statuses from status sync for the gateway (see the module docstring);
    ``flags`` counts flags raised by status, for the metrics."""

    def __init__(self, conn: sqlite3.Connection, pipeline: Pipeline, after_photo: AfterPhoto):
        self._conn = conn
        self._pipeline = pipeline
        self._after_photo = after_photo
        self.flags: Counter[str] = Counter(dict.fromkeys(STATUS_NAMES, 0))

    def case_status(
        self, incident_id: str, status: str, reason: str | None = None
    ) -> list[CaseCommand]:
        """Act on the case of ``incident_id`` being in ``status``; return the commands
        made. ``reason``: why a final case closes the incident (default: the status)."""
        now_ms = int(time.time() * 1000)
        persisting = self._pipeline.persisting(incident_id)
        action = decide(status, bool(persisting), self._pipeline.flag_of(incident_id))
        reason = reason or f"case {status} on the platform"
        if action is Action.CLOSE:
            self._pipeline.close_incident(incident_id, reason)
        elif action is Action.UNFLAG:
            self._pipeline.unflag(incident_id, now_ms)
        elif action is Action.FLAG:
            return self._flag(incident_id, status, persisting, now_ms, None)
        elif action is Action.FLAG_AND_CLOSE:
            close = f"{reason} while the problem persisted (flagged)"
            return self._flag(incident_id, status, persisting, now_ms, close)
        return []

    def _flag(
        self,
        incident_id: str,
        status: str,
        persisting: list[Alert],
        now_ms: int,
        close_reason: str | None,
    ) -> list[CaseCommand]:
        evidence = [self._evidence(alert, status, now_ms) for alert in persisting]
        # Counted before the commit: a commit the store refuses is kept and made later.
        self.flags[status] += 1
        log.warning(
            "incident %s: case %s while %d alert(s) still fire: flagged (%s)",
            incident_id, status, len(evidence), "; ".join(a.summary for a in evidence),
        )  # fmt: skip
        return self._pipeline.flag(incident_id, status, evidence, now_ms, close_reason)

    def absorbs(self, incident_id: str, command: CaseCommand) -> bool:
        """Whether a command the platform refused because the case is final belongs to the
        incident's closure flag rather than to a new case: the incident was closed flagged
        and the command does not raise its priority (a worse problem is filed anew)."""
        row = self._conn.execute(
            "SELECT value FROM state WHERE ns = 'incident' AND key = ?", (incident_id,)
        ).fetchone()
        if row is None:
            return False
        incident = json.loads(row[0])
        if incident.get("status") == "open" or incident.get("flag") not in FINAL_STATUSES:
            return False
        return command.priority.rank <= Priority(incident["priority"]).rank

    def _evidence(self, alert: Alert, status: str, now_ms: int) -> Alert:
        """The alert as it stands now, flagged with the status checked at."""
        return replace(self._seen_now(alert, status, now_ms), closure_check=status)

    def _seen_now(self, alert: Alert, status: str, now_ms: int) -> Alert:
        """The alert as it stands now, its summary saying the problem persists."""
        flag = f"closure check at {status} ({STATUS_NAMES.get(status, status)}): problem persists"
        if alert.origin == "video":
            pictured = self._after_photo(replace(alert, ts=now_ms, media=()), now_ms)
            seen = f"after photo {_iso(now_ms)}" if pictured.media else "no after photo"
            return replace(pictured, summary=f"{flag}: {alert.zone or alert.source_id} {seen}")
        latest = self._latest_reading(alert.source_id)
        if latest is None:
            return replace(alert, summary=f"{flag}: {alert.source_id} no stored reading left")
        ts, values = latest
        shown = ", ".join(
            f"{k}={json.dumps(v)}" for k, v in sorted(values.items())[:MAX_VALUES_SHOWN]
        )
        summary = f"{flag}: {alert.source_id} {shown} at {_iso(ts)}"
        return replace(alert, ts=ts, values=values, summary=summary)

    def _latest_reading(self, device_id: str) -> tuple[int, dict] | None:
        """The device's newest stored reading (time, values), through the (device, ts)
        index; None once retention has taken them all."""
        row = self._conn.execute(
            "SELECT ts, values_json FROM readings WHERE device_id = ? ORDER BY ts DESC, rowid"
            " DESC LIMIT 1",
            (device_id,),
        ).fetchone()
        return None if row is None else (row[0], json.loads(row[1]))


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="seconds")
