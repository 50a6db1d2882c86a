"""The embedded store: one SQLite file in WAL mode holds telemetry, dead letters, alerts,
rule/replay/incident state, suspected duplicates and (through the case bridge) the outbox.

Everything one batch of messages changes is written in one transaction, and the MQTT
messages are acknowledged only after it commits: a crash loses nothing that was acked and
repeats nothing that was committed (repeats are refused as duplicates on redelivery).
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from case_bridge import outbox

T = TypeVar("T")

# What a store failure raises, embedded (SQLite) or in the cluster (PostgreSQL,
# gateway/pg_store.py): catch this, never one driver's errors. Defined with the outbox, so
# the case bridge catches it without importing the gateway.
DatabaseError = outbox.DatabaseError

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    device_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    seq INTEGER,
    values_json TEXT NOT NULL,
    -- 1: kept, but its device was suspect (stuck or jumping), so no business rule saw it
    suspect INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS readings_device_ts ON readings(device_id, ts);
-- Raw readings past retention, folded per device, field and bucket (gateway/history.py).
CREATE TABLE IF NOT EXISTS readings_downsampled (
    device_id TEXT NOT NULL,
    bucket_start INTEGER NOT NULL,
    bucket_ms INTEGER NOT NULL,
    field TEXT NOT NULL,
    is_bool INTEGER NOT NULL,
    n INTEGER NOT NULL,
    v_sum REAL NOT NULL,
    v_min REAL NOT NULL,
    v_max REAL NOT NULL,
    last_ts INTEGER NOT NULL,
    last_value REAL NOT NULL,
    UNIQUE (device_id, bucket_start, bucket_ms, field)
);
CREATE INDEX IF NOT EXISTS readings_downsampled_start ON readings_downsampled(bucket_start);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    topic TEXT NOT NULL,
    device_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters(reason);
-- Refusals counted per reason since the store was made: dead letters themselves expire
-- (gateway/retention.py), the counts shown to operators do not.
CREATE TABLE IF NOT EXISTS rejection_totals (
    reason TEXT PRIMARY KEY,
    n INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_key TEXT NOT NULL,
    state TEXT NOT NULL,
    ts INTEGER NOT NULL,
    incident_id TEXT,
    body TEXT NOT NULL,
    -- why it filed nothing: "silence:<id>", "confirm", "inhibited:<rule>" (rules/flow.py)
    held_by TEXT
);
-- An incident's timeline (the console): 23.5 ms over 200,000 alerts without it, 0.3 ms with.
CREATE INDEX IF NOT EXISTS alerts_incident ON alerts(incident_id, id);
-- Operators' silences (gateway/silences.py), kept after they end as their history.
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    matchers_json TEXT NOT NULL,
    author TEXT NOT NULL,
    reason TEXT NOT NULL,
    starts_ms INTEGER NOT NULL,
    ends_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    removed_ms INTEGER,
    changes_json TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS silences_ends ON silences(ends_ms);
-- Who may do what (gateway/users.py, gateway/client_tokens.py, gateway/sessions.py).
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    password_hash TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    changed_ms INTEGER NOT NULL,
    disabled_ms INTEGER
);
-- Client tokens are kept as their SHA-256 only; a revoked name may be given again.
CREATE TABLE IF NOT EXISTS client_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    token_sha256 TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    revoked_ms INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS client_tokens_live_name
    ON client_tokens(name) WHERE revoked_ms IS NULL;
-- Console sessions, by the SHA-256 of the cookie's id.
CREATE TABLE IF NOT EXISTS sessions (
    id_sha256 TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    csrf TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user_id, created_ms);
-- Every write through the API (gateway/audit.py): append-only, by the triggers below.
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    kind TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before_json TEXT,
    after_json TEXT,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_actor ON audit(actor, id);
CREATE INDEX IF NOT EXISTS audit_action ON audit(action, id);
CREATE INDEX IF NOT EXISTS audit_target ON audit(target, id);
CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts_ms);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
-- Suspected duplicates (疑似重复, rules/incidents.py ``take_suspects``): a new incident close
-- to an open one, filed as its own case, kept for an operator to merge or dismiss
-- (gateway/duplicates.py, gateway/api_duplicates.py).
CREATE TABLE IF NOT EXISTS suspected_duplicates (
    id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    other_incident_id TEXT NOT NULL,
    score REAL NOT NULL,
    reasons_json TEXT NOT NULL,
    ts INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'merged', 'dismissed')),
    decided_by TEXT,
    decided_at INTEGER,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS suspected_duplicates_status ON suspected_duplicates(status);
CREATE TABLE IF NOT EXISTS state (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (ns, key)
);
-- Ids of the platform's status events accepted (gateway/api_platform_events.py), so that a
-- replay inside the signature's tolerance is refused after a restart too; the route itself
-- bounds them by count and age.
CREATE TABLE IF NOT EXISTS webhook_events (
    event_id TEXT PRIMARY KEY,
    seen_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_events_seen ON webhook_events(seen_ms);
"""

PAYLOAD_KEEP = 1024  # bytes of a refused payload kept for the operator
# A dead letter keeps enough of its topic, device id and reason to act on, and no more:
# junk traffic with 10 KB device ids must not cost 10 KB a row.
TOPIC_KEEP = 256
DEVICE_ID_KEEP = 128
DETAIL_KEEP = 500
INT64 = range(-(2**63), 2**63)  # what an SQLite INTEGER column holds


def storable(ts: int, seq: int | None) -> bool:
    """Whether a reading's integers fit SQLite's INTEGER. The codecs bound them tighter;
    this is the store's own promise that no reading can make a batch's commit fail."""
    return ts in INT64 and (seq is None or seq in INT64)


def connect(
    path: Path, synchronous: str = "FULL", autocheckpoint: bool = True
) -> sqlite3.Connection:
    """The store, made or brought up to date. ``autocheckpoint=False`` leaves copying the
    WAL into the database file to ``checkpoint`` on another connection: SQLite's own runs
    inside the COMMIT that crosses 1,000 pages of WAL, and the ingest's event loop waits
    for that COMMIT (copy and fsync)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=5000")
    if not autocheckpoint:
        conn.execute("PRAGMA wal_autocheckpoint=0")
    new_totals = not _has_table(conn, "rejection_totals")
    conn.executescript(SCHEMA)
    if new_totals:  # a store from before the totals: count what it kept
        conn.execute(
            "INSERT OR IGNORE INTO rejection_totals"
            " SELECT reason, count(*) FROM dead_letters GROUP BY reason"
        )
    if "held_by" not in _columns(conn, "alerts"):  # a store from before the alert flow
        conn.execute("ALTER TABLE alerts ADD COLUMN held_by TEXT")
    outbox.ensure_schema(conn)
    return conn


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """Copy what the WAL holds into the database file without waiting on anyone (PASSIVE:
    frames a reader still needs stay for the next time): (1 when it could not finish, WAL
    frames, frames copied). For a connection of its own, off the writer's path."""
    busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return busy, frames, copied


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(query, (name,)).fetchone() is not None


class Batch:
    """The writes of one batch, applied together by ``commit``."""

    def __init__(self) -> None:
        self.readings: list[tuple[str, int, int | None, str, int]] = []
        self.dead_letters: list[tuple[int, str, str, str, str, str]] = []
        # (key, state, ts, incident id, body JSON[, held_by]): rows without held_by filed
        # or tried to file a case
        self.alerts: list[tuple] = []
        self.states: list[tuple[str, str, Any]] = []
        # Suspected-duplicate pairs of the incident book (``take_suspects``), stored with
        # the incidents that produced them.
        self.suspects: list[dict[str, Any]] = []
        self.also: list[Callable[[sqlite3.Connection], Any]] = []  # e.g. outbox rows
        # ``states`` as written: (ns, key, JSON text, or None to delete), by ``seal``.
        self._state_rows: list[tuple[str, str, str | None]] = []

    def reject(
        self, now_ms: int, topic: str, device_id: str, reason: str, detail: str, payload: bytes
    ) -> None:
        text = _no_nul(payload[:PAYLOAD_KEEP].decode("utf-8", errors="backslashreplace"))
        self.dead_letters.append(
            (now_ms, _clip(topic, TOPIC_KEEP), _clip(device_id, DEVICE_ID_KEEP), reason,
             _clip(detail, DETAIL_KEEP), text)
        )  # fmt: skip

    def seal(self) -> None:
        """Encode ``states`` now. The values are the rules' live state objects: a batch
        committed on another thread (gateway/commit_queue.py) must carry them as they
        stood when the batch was made, not as the event loop has changed them since."""
        if self.states:
            self._state_rows += state_rows(self.states)
            self.states = []

    def extend(self, later: Batch) -> None:
        """Append a later batch's writes, in order (a batch whose commit failed is retried
        together with the next one)."""
        self.seal()
        later.seal()
        self.readings += later.readings
        self.dead_letters += later.dead_letters
        self.alerts += later.alerts
        self._state_rows += later._state_rows
        self.suspects += later.suspects
        self.also += later.also

    def __bool__(self) -> bool:
        return bool(
            self.readings or self.dead_letters or self.alerts or self.states or self.suspects
            or self.also or self._state_rows
        )  # fmt: skip


def _clip(text: str, limit: int) -> str:
    """At most ``limit`` characters, marked when cut, always encodable as UTF-8 and
    without NUL."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _no_nul(text.encode("utf-8", errors="backslashreplace").decode("utf-8"))


def _no_nul(text: str) -> str:
    """NUL written as ``\\x00``: PostgreSQL's text refuses it (SQLite takes it), and one
    refused message must not make the whole batch's commit fail on the cluster's store."""
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def commit(conn: sqlite3.Connection, batch: Batch) -> None:
    """Write a batch in one transaction, ``batch.also`` callables included (outbox)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        write_readings(conn, batch.readings)
        conn.executemany(
            "INSERT INTO dead_letters (received_ms, topic, device_id, reason, detail, payload)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            batch.dead_letters,
        )
        conn.executemany(
            "INSERT INTO rejection_totals (reason, n) VALUES (?, ?)"
            " ON CONFLICT (reason) DO UPDATE SET n = rejection_totals.n + excluded.n",
            Counter(row[3] for row in batch.dead_letters).items(),
        )
        conn.executemany(
            "INSERT INTO alerts (alert_key, state, ts, incident_id, body, held_by)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [row if len(row) == 6 else (*row, None) for row in batch.alerts],
        )
        batch.seal()
        write_state_rows(conn, batch._state_rows)
        write_suspects(conn, batch.suspects)
        for write in batch.also:
            write(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # a failed BEGIN or COMMIT may have ended it already
            conn.execute("ROLLBACK")
        raise


def json_text(value: Any) -> str:
    """``value`` as JSON text that ``json.loads`` reads back as ``json.dumps`` would have
    written it, in a fifth of the time: every batch writes a replay state per reading, and
    ``json.dumps`` was the largest cost of the commit. msgspec writes NaN and ±Infinity as
    null, where ``json.dumps`` keeps them, so a value holding one is written by
    ``json.dumps`` (as is anything msgspec cannot encode); a None (a quiet rule state has
    several) is null either way and keeps the fast path. Unlike ``json.dumps``, msgspec
    also writes bytes, sets, dataclasses and dates: states are the rules' own plain dicts,
    and a reading's values go through ``values_text``, which keeps refusing those."""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError, msgspec.EncodeError):
        return json.dumps(value)
    if b"null" in text and _has_non_finite(value):
        return json.dumps(value)
    return text.decode()


def _has_non_finite(value: Any) -> bool:
    """Whether a NaN or ±Infinity float is anywhere in ``value`` (which msgspec wrote as
    null): only then is the text made again; a None is a null either way."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    return False


_ENCODER = msgspec.json.Encoder()
_MSGPACK = msgspec.msgpack.Encoder()
_NON_FINITE_FLOAT64 = re.compile(rb"\xcb[\x7f\xff][\xf0-\xff]")
_VALUE_TYPES = frozenset({float, int, bool})


def values_text(values: dict[str, Any]) -> str:
    """A reading's values as JSON (``json_text``). A value that is no number or boolean, a
    codec's bug, is left to ``json.dumps`` to refuse, so that message alone becomes an
    ``internal`` dead letter as before."""
    if all(type(value) in _VALUE_TYPES for value in values.values()):
        return json_text(values)
    return json.dumps(values)


def json_texts(values: list[Any]) -> list[str]:
    """``json_text`` of each value, written by msgspec in one call (one line each: JSON
    text holds no raw newline) instead of one call per value: a batch writes a state or
    two per reading. Only a text with a null is looked through for a non-finite float."""
    try:
        lines = _ENCODER.encode_lines(values).decode()
    except (TypeError, ValueError, msgspec.EncodeError):
        return [json_text(value) for value in values]
    texts = lines.split("\n")
    texts.pop()  # after the last newline
    if "null" not in lines or not _maybe_non_finite(values):
        return texts
    return [
        json.dumps(value) if "null" in text and _has_non_finite(value) else text
        for text, value in zip(texts, values, strict=True)
    ]


def _maybe_non_finite(values: list[Any]) -> bool:
    """Whether a float in ``values`` may be NaN or infinite, in one C pass instead of a walk
    of every value with a null (rule states hold several): msgpack writes every float as a
    float64 (0xcb), whose exponent bits are all set only when it is not finite. The same
    bytes inside a string or an integer only cost the exact look."""
    try:
        packed = _MSGPACK.encode(values)
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        return True
    return _NON_FINITE_FLOAT64.search(packed) is not None


def write_states(conn: sqlite3.Connection, states: list[tuple[str, str, Any]]) -> None:
    """Upsert ``(ns, key, value)`` states, deleting those whose value is None (inside the
    caller's transaction)."""
    write_state_rows(conn, state_rows(states))


def state_rows(states: list[tuple[str, str, Any]]) -> list[tuple[str, str, str | None]]:
    """``(ns, key, value)`` states as ``write_state_rows`` takes them: each value as JSON
    text, encoded together (``json_texts``), or None for a state deleted."""
    texts = iter(json_texts([value for _, _, value in states if value is not None]))
    return [(ns, key, None if value is None else next(texts)) for ns, key, value in states]


def write_state_rows(conn: sqlite3.Connection, rows: list[tuple[str, str, str | None]]) -> None:
    """Upsert encoded states, deleting those whose text is None, inside the caller's
    transaction. Of rows for one key (batches merged after a refused commit), the last
    wins."""
    last = {(ns, key): text for ns, key, text in rows}
    upserts = [(ns, key, text) for (ns, key), text in last.items() if text is not None]
    deletes = [key for key, text in last.items() if text is None]
    if not _bulk_insert(conn, _UPSERT_STATES_JSON, upserts):
        conn.executemany(
            "INSERT INTO state (ns, key, value) VALUES (?, ?, ?)"
            " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
            upserts,
        )
    conn.executemany("DELETE FROM state WHERE ns = ? AND key = ?", deletes)


def write_readings(
    conn: sqlite3.Connection, rows: list[tuple[str, int, int | None, str, int]]
) -> None:
    """Insert reading rows, inside the caller's transaction. A row whose integers SQLite
    cannot hold goes row by row, where the driver refuses it (JSON would make it a float)."""
    bulk = all(storable(row[1], row[2]) for row in rows)
    if not (bulk and _bulk_insert(conn, _INSERT_READINGS_JSON, rows)):
        conn.executemany(
            "INSERT INTO readings (device_id, ts, seq, values_json, suspect)"
            " VALUES (?, ?, ?, ?, ?)",
            rows,
        )


# The rows of a table as one JSON array, unpacked by SQLite itself (``json_each``): one
# statement step for the whole batch instead of one per row. Python's sqlite3 lets go of the
# interpreter lock around every step and must take it back after each; on the commit thread
# (gateway/commit_queue.py), with the event loop busy preparing the next batch, each taking
# back can wait out the interpreter's switch interval (5 ms), so a batch of a few hundred
# readings took seconds to commit. json_extract, not ``->>``, keeps SQLite 3.9 and later.
_INSERT_READINGS_JSON = (
    "INSERT INTO readings (device_id, ts, seq, values_json, suspect)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]')"
    " FROM json_each(?)"
)
_UPSERT_STATES_JSON = (
    "INSERT INTO state (ns, key, value)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]') FROM json_each(?) WHERE true"
    " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value"
)


def _bulk_insert(conn: Any, sql: str, rows: list[tuple]) -> bool:
    """Run ``sql`` over ``rows`` sent as one JSON array, on SQLite; False where it cannot
    (another store, a row msgspec cannot write, a NUL that SQLite's JSON text would end
    at): the caller then inserts row by row."""
    if not rows or not isinstance(conn, sqlite3.Connection):
        return not rows
    try:
        text = _ENCODER.encode(rows)
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        return False
    if b"\\u0000" in text:
        return False
    conn.execute(sql, (text,))
    return True


def write_suspects(conn: sqlite3.Connection, suspects: list[dict[str, Any]]) -> None:
    """Insert suspected-duplicate pairs as open (inside the caller's transaction). A pair
    already stored is left as it is: replaying alerts after a crash finds the same pairs
    again, and must not reopen one an operator has decided."""
    conn.executemany(
        "INSERT INTO suspected_duplicates"
        " (id, incident_id, other_incident_id, score, reasons_json, ts) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO NOTHING",
        [
            (p["id"], p["incident_id"], p["other_incident_id"], float(p["score"]),
             json.dumps(list(p["reasons"]), ensure_ascii=False), int(p["ts"]))
            for p in suspects
        ],
    )  # fmt: skip


def in_transaction(conn: sqlite3.Connection, work: Callable[[], T]) -> T:
    """Run ``work`` in one write transaction (the connection is in autocommit mode). Inside
    a transaction already open, ``work`` joins it: the opener commits both or rolls both
    back (an audited write and its entry, gateway/audit.py)."""
    if conn.in_transaction:
        return work()
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def load_states(conn: sqlite3.Connection, ns: str) -> Iterator[tuple[str, Any]]:
    # In key order on either store (PostgreSQL's scan order is not SQLite's index order):
    # what is restored, and so what a restarted book iterates, does not depend on the store.
    for key, value in conn.execute("SELECT key, value FROM state WHERE ns = ? ORDER BY key", (ns,)):
        yield key, json.loads(value)


def has_state(conn: sqlite3.Connection, ns: str, key: str) -> bool:
    query = "SELECT 1 FROM state WHERE ns = ? AND key = ?"
    return conn.execute(query, (ns, key)).fetchone() is not None


def load_open_incidents(conn: sqlite3.Connection) -> Iterator[dict[str, Any]]:
    """Open incidents only: closed ones stay in the store for the API and its retention,
    and a gateway that has run for years does not load them all at start-up."""
    rows = conn.execute(
        "SELECT value FROM state WHERE ns = 'incident'"
        " AND json_extract(value, '$.status') = 'open' ORDER BY key"
    )
    for (value,) in rows:
        yield json.loads(value)


def rejection_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Refusals per reason since the store was made (expired dead letters included)."""
    return dict(conn.execute("SELECT reason, n FROM rejection_totals"))


# The column holding each growing table's row id: SQLite's rowid (``id`` is its alias), and
# on PostgreSQL the identity column of that name (gateway/pg_store.py).
_ROW_IDS = {"readings": "rowid", "alerts": "id", "dead_letters": "id"}


def count_rows(conn: sqlite3.Connection, table: str) -> int:
    # max(row id), not count(*): constant time on a table that only grows
    row_id = _ROW_IDS[table]
    return conn.execute(f"SELECT coalesce(max({row_id}), 0) FROM {table}").fetchone()[0]
