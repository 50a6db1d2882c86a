"""SQLite persistence for cases and idempotency keys (one file, WAL mode).

Every write runs in a ``BEGIN IMMEDIATE`` transaction, which takes SQLite's write lock
before reading: a check such as "was this idempotency key used?" and the insert that
follows it are therefore atomic across threads and processes, and the PRIMARY KEY on the
key tables backs that up. Each call opens its own connection so the store is safe to use
from FastAPI's thread pool without sharing a connection between threads.

What is kept and what one listing returns are bounded: a case keeps at most
``MAX_EVIDENCE_PER_CASE`` evidence items (later ones are counted in ``evidence_dropped``,
while an escalation they carry still applies), and a page of ``find`` stops at ``limit``
cases or once ``PAGE_BYTES`` of stored case data are in it, whichever comes first (always
at least one case), so no listing loads every case into memory.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any

from simulators.platform import clock
from simulators.platform.schemas import CaseCreate, EvidenceAppend, EvidenceItem
from simulators.platform.workflow import (
    CLOSURE_CHECK,
    CLOSURE_CHECK_NAME,
    FINAL_STATUSES,
    INITIAL_STATUS,
    STATUS_NAMES,
    CaseClosed,
    check_transition,
    is_more_severe,
)

Case = dict[str, Any]

MAX_EVIDENCE_PER_CASE = 200
PAGE_BYTES = 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    id           TEXT PRIMARY KEY,
    class_code   TEXT NOT NULL,
    class_name   TEXT NOT NULL,
    part_code    TEXT NOT NULL,
    priority     TEXT NOT NULL,
    deadline     TEXT NOT NULL,
    lat          REAL NOT NULL,
    lon          REAL NOT NULL,
    address      TEXT NOT NULL,
    grid_code    TEXT NOT NULL,
    description  TEXT NOT NULL,
    source       TEXT NOT NULL,
    status       TEXT NOT NULL,
    external_key TEXT,
    evidence     TEXT NOT NULL,
    history      TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    evidence_dropped INTEGER NOT NULL DEFAULT 0,
    responsible_unit TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS cases_status ON cases (status);
CREATE INDEX IF NOT EXISTS cases_class_code ON cases (class_code);
CREATE INDEX IF NOT EXISTS cases_updated_at ON cases (updated_at);
CREATE TABLE IF NOT EXISTS create_keys (
    key     TEXT PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES cases (id)
);
CREATE TABLE IF NOT EXISTS evidence_keys (
    case_id TEXT NOT NULL REFERENCES cases (id),
    key     TEXT NOT NULL,
    PRIMARY KEY (case_id, key)
);
"""


class CaseNotFound(Exception):
    """No case has this id (maps to HTTP 404)."""

    def __init__(self, case_id: str) -> None:
        super().__init__(f"case {case_id} not found")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _history(at: str, action: str, from_: str | None, to: str, note: str) -> dict[str, Any]:
    return {"ts": at, "action": action, "from": from_, "to": to, "note": note}


def _append_entry(at: str, status: str, kept: list[EvidenceItem], dropped: int) -> dict[str, Any]:
    """The history entry of an append: ``closure_check`` when every kept item is a closure
    check's note (复核提示, naming the statuses checked at), else ``evidence``."""
    note = f"{len(kept)} item(s)"
    checked = [item.checked_status for item in kept if item.checked_status is not None]
    if checked:
        at_statuses = ", ".join(sorted(set(checked)))
        note += f", {len(checked)} {CLOSURE_CHECK_NAME}: problem persists at {at_statuses}"
    if dropped:
        note += f"; {dropped} not kept (a case keeps {MAX_EVIDENCE_PER_CASE})"
    action = CLOSURE_CHECK if len(checked) == len(kept) else "evidence"
    return _history(at, action, status, status, note)


def _earlier(current: str, proposed: str | None) -> str:
    """The proposed deadline if it is earlier: escalation may shorten a deadline, not extend."""
    if proposed is not None and clock.parse_iso(proposed) < clock.parse_iso(current):
        return proposed
    return current


def _to_case(row: sqlite3.Row) -> Case:
    return {
        "id": row["id"],
        "class_code": row["class_code"],
        "class_name": row["class_name"],
        "part_code": row["part_code"],
        "priority": row["priority"],
        "deadline": row["deadline"],
        "responsible_unit": row["responsible_unit"],
        "location": {
            "lat": row["lat"],
            "lon": row["lon"],
            "address": row["address"],
            "grid_code": row["grid_code"],
        },
        "description": row["description"],
        "source": row["source"],
        "evidence": json.loads(row["evidence"]),
        "status": row["status"],
        "status_name": STATUS_NAMES[row["status"]],
        "history": json.loads(row["history"]),
        "external_key": row["external_key"],
        "evidence_dropped": row["evidence_dropped"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _stored_bytes(row: sqlite3.Row) -> int:
    """About what a case costs in a listing: its free-form texts plus a fixed part."""
    return 512 + sum(len(row[name]) for name in ("evidence", "history", "description", "address"))


class CaseStore:
    """Cases, their history and the idempotency keys that protect them from replays.

    ``on_status_change`` is told of each status change once it has committed (the webhook
    sender's ``notify``): a subscriber is never told of a change that was rolled back.
    Changes and their telling are one step under a lock, so two requests moving a case at
    once tell in the order they committed. It must not block: it runs in the request that
    made the change.
    """

    def __init__(self, path: str, on_status_change: Callable[[Case], None] | None = None) -> None:
        self._path = path
        self._on_status_change = on_status_change
        self._status_lock = threading.Lock()
        with closing(self._connect()) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            columns = {row["name"] for row in conn.execute("PRAGMA table_info(cases)")}
            if "evidence_dropped" not in columns:  # a file from before the evidence bound
                conn.execute(
                    "ALTER TABLE cases ADD COLUMN evidence_dropped INTEGER NOT NULL DEFAULT 0"
                )
            if "responsible_unit" not in columns:  # a file from before dispatch by unit
                conn.execute(
                    "ALTER TABLE cases ADD COLUMN responsible_unit TEXT NOT NULL DEFAULT ''"
                )

    def _connect(self) -> sqlite3.Connection:
        # autocommit mode: transactions are explicit, so BEGIN IMMEDIATE is ours to issue.
        conn = sqlite3.connect(self._path, timeout=10.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _load(conn: sqlite3.Connection, case_id: str) -> Case:
        row = conn.execute("SELECT * FROM cases WHERE id = ?", (case_id,)).fetchone()
        if row is None:
            raise CaseNotFound(case_id)
        return _to_case(row)

    def get(self, case_id: str) -> Case:
        """Return one case or raise CaseNotFound."""
        with closing(self._connect()) as conn:
            return self._load(conn, case_id)

    def find(
        self,
        status: str | None = None,
        class_code: str | None = None,
        since: str | None = None,
        after: str | None = None,
        limit: int = 500,
    ) -> tuple[list[Case], str | None]:
        """One page of the cases matching every given filter, ordered by id, after the case
        ``after``; and the ``after`` of the next page (None when this is the last).
        ``since`` is any zoned ISO time."""
        clauses: list[str] = []
        params: list[str] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if class_code is not None:
            clauses.append("class_code = ?")
            params.append(class_code)
        if since is not None:
            clauses.append("updated_at >= ?")
            params.append(clock.to_iso(clock.parse_iso(since)))
        if after is not None:
            clauses.append("id > ?")
            params.append(after)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        cases: list[Case] = []
        size = 0
        with closing(self._connect()) as conn:
            rows = conn.execute(f"SELECT * FROM cases {where} ORDER BY id", params)
            for row in rows:  # streamed: only this page's rows are loaded
                if len(cases) == limit or (cases and size + _stored_bytes(row) > PAGE_BYTES):
                    return cases, cases[-1]["id"]
                cases.append(_to_case(row))
                size += _stored_bytes(row)
        return cases, None

    def case_for_key(self, key: str) -> Case | None:
        """The case an earlier create with this idempotency key made, if any."""
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT case_id FROM create_keys WHERE key = ?", (key,)).fetchone()
            return None if row is None else self._load(conn, row["case_id"])

    def create(self, new: CaseCreate, idempotency_key: str | None) -> tuple[Case, bool]:
        """File a case; return (case, True), or (existing case, False) for a used key."""
        with self._write() as conn:
            if idempotency_key is not None:
                row = conn.execute(
                    "SELECT case_id FROM create_keys WHERE key = ?", (idempotency_key,)
                ).fetchone()
                if row is not None:
                    return self._load(conn, row["case_id"]), False
            moment = clock.now()
            at = clock.to_iso(moment)
            case_id = self._next_id(conn, moment.strftime("%Y%m%d"))
            history = [_history(at, "create", None, INITIAL_STATUS, "")]
            evidence = [item.model_dump(exclude_unset=True) for item in new.evidence]
            external_key = new.external_key if new.external_key is not None else idempotency_key
            conn.execute(
                "INSERT INTO cases (id, class_code, class_name, part_code, priority, deadline,"
                " lat, lon, address, grid_code, description, source, status, external_key,"
                " evidence, history, created_at, updated_at, responsible_unit)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    case_id,
                    new.class_code,
                    new.class_name,
                    new.part_code,
                    new.priority,
                    new.deadline,
                    new.location.lat,
                    new.location.lon,
                    new.location.address,
                    new.location.grid_code,
                    new.description,
                    new.source,
                    INITIAL_STATUS,
                    external_key,
                    _dumps(evidence),
                    _dumps(history),
                    at,
                    at,
                    new.responsible_unit,
                ),
            )
            if idempotency_key is not None:
                conn.execute(
                    "INSERT INTO create_keys (key, case_id) VALUES (?, ?)",
                    (idempotency_key, case_id),
                )
            return self._load(conn, case_id), True

    @staticmethod
    def _next_id(conn: sqlite3.Connection, day: str) -> str:
        """Next id of the day, "C20261121-000001" style; the caller holds the write lock."""
        prefix = f"C{day}-"
        row = conn.execute(
            "SELECT MAX(id) AS last FROM cases WHERE id LIKE ?", (prefix + "%",)
        ).fetchone()
        serial = 1 if row["last"] is None else int(row["last"][len(prefix) :]) + 1
        return f"{prefix}{serial:06d}"

    def transition(self, case_id: str, to: str, note: str) -> Case:
        """Move a case to status ``to``; raise IllegalTransition if the workflow forbids it."""
        with self._status_lock:
            changed = self._transition(case_id, to, note)
            if self._on_status_change is not None:
                self._on_status_change(changed)
        return changed

    def _transition(self, case_id: str, to: str, note: str) -> Case:
        with self._write() as conn:
            case = self._load(conn, case_id)
            action = check_transition(case["status"], to)
            at = clock.to_iso(clock.now())
            history = [*case["history"], _history(at, action, case["status"], to, note)]
            conn.execute(
                "UPDATE cases SET status = ?, history = ?, updated_at = ? WHERE id = ?",
                (to, _dumps(history), at, case_id),
            )
            return self._load(conn, case_id)

    def replayed_evidence(self, case_id: str, key: str) -> Case | None:
        """The case if this evidence idempotency key was already applied to it, else None."""
        with closing(self._connect()) as conn:
            case = self._load(conn, case_id)
            row = conn.execute(
                "SELECT 1 FROM evidence_keys WHERE case_id = ? AND key = ?", (case_id, key)
            ).fetchone()
            return None if row is None else case

    def append_evidence(
        self, case_id: str, update: EvidenceAppend, idempotency_key: str | None
    ) -> Case:
        """Append evidence and escalate if the update's priority is more severe.

        A replayed key returns the case untouched; a closed or void case raises CaseClosed
        unless the update is closure check notes alone (``EvidenceAppend.notes_only``),
        which it keeps without changing its status. Items past ``MAX_EVIDENCE_PER_CASE``
        are not kept, only counted; the history records an append only when it kept
        something, as ``closure_check`` when it kept notes alone.
        """
        with self._write() as conn:
            case = self._load(conn, case_id)
            if idempotency_key is not None:
                seen = conn.execute(
                    "SELECT 1 FROM evidence_keys WHERE case_id = ? AND key = ?",
                    (case_id, idempotency_key),
                ).fetchone()
                if seen is not None:
                    return case
            status = case["status"]
            if status in FINAL_STATUSES and not update.notes_only:
                raise CaseClosed(status)
            at = clock.to_iso(clock.now())
            room = max(0, MAX_EVIDENCE_PER_CASE - len(case["evidence"]))
            kept = update.evidence[:room]
            dropped = len(update.evidence) - len(kept)
            evidence = [*case["evidence"], *(item.model_dump(exclude_unset=True) for item in kept)]
            history = list(case["history"])
            if kept:
                history.append(_append_entry(at, status, kept, dropped))
            priority, deadline = case["priority"], case["deadline"]
            if update.priority is not None and is_more_severe(update.priority, priority):
                deadline = _earlier(deadline, update.deadline)
                note = "" if deadline == case["deadline"] else f"deadline -> {deadline}"
                history.append(_history(at, "escalate", priority, update.priority, note))
                priority = update.priority
            conn.execute(
                "UPDATE cases SET evidence = ?, history = ?, priority = ?, deadline = ?,"
                " updated_at = ?, evidence_dropped = evidence_dropped + ? WHERE id = ?",
                (_dumps(evidence), _dumps(history), priority, deadline, at, dropped, case_id),
            )
            if idempotency_key is not None:
                conn.execute(
                    "INSERT INTO evidence_keys (case_id, key) VALUES (?, ?)",
                    (case_id, idempotency_key),
                )
            return self._load(conn, case_id)
