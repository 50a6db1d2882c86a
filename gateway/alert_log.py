"""The two queues between replicas, in PostgreSQL (gateway/replica.py).

``alert_log``: alerts the partition workers (and camera holders) made, appended in the
same fenced transaction as the readings that made them, taken by the incident desk in id
order and deleted in the same fenced transaction as the incidents and outbox rows they
became. An alert is therefore judged exactly once: a worker's batch that does not commit
leaves no alert behind, and a desk that does not commit leaves the alert in the log.
Commits of different workers may land out of id order; the desk takes whatever is
committed, so a later commit with a lower id is taken next time, never skipped.

``rearm_queue``: alert keys the desk re-armed (their case closed), for the replica that
holds the rule state of their source: the worker of the device's partition applies them
before its next batch and deletes them in that batch's commit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from domain import Alert
from gateway.store import json_text

log = logging.getLogger(__name__)

# Serialises the queues' creation by replicas starting at the same moment.
SCHEMA_LOCK_KEY = 0x63677733

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_log (
    id bigserial PRIMARY KEY,
    lease int NOT NULL,
    body text NOT NULL,
    created_ms bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS rearm_queue (
    id bigserial PRIMARY KEY,
    lease int NOT NULL,
    alert_key text NOT NULL
);
CREATE INDEX IF NOT EXISTS rearm_queue_lease ON rearm_queue (lease, id)
"""


class LogTakenElsewhere(Exception):
    """Rows this desk took were gone at its commit: another desk consumed them."""


def append(conn: Any, *, lease: int, alerts: Sequence[Alert], now_ms: int) -> None:
    """Add a worker's alerts (inside its commit)."""
    conn.executemany(
        "INSERT INTO alert_log (lease, body, created_ms) VALUES (?, ?, ?)",
        [(lease, json_text(alert.to_dict()), now_ms) for alert in alerts],
    )


@dataclass(frozen=True, slots=True)
class Taken:
    """Alerts read from the log, and the ids to delete when they commit (unreadable rows
    included: counted in ``unreadable`` and dropped, never blocking the log)."""

    alerts: list[Alert]
    ids: list[int]
    unreadable: int


def peek(conn: Any, limit: int) -> Taken:
    """The oldest ``limit`` committed alerts, without taking them yet."""
    rows = conn.execute("SELECT id, body FROM alert_log ORDER BY id LIMIT ?", (limit,)).fetchall()
    alerts, unreadable = [], 0
    for row_id, body in rows:
        try:
            alerts.append(Alert.from_dict(json.loads(body)))
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            unreadable += 1
            log.error("alert log row %d does not decode (%s); dropped", row_id, exc)
    return Taken(alerts, [row_id for row_id, _ in rows], unreadable)


def delete(conn: Any, *, ids: list[int]) -> None:
    """Remove the taken rows (inside the desk's commit); all of them, or the commit fails."""
    if not ids:
        return
    gone = conn.execute("DELETE FROM alert_log WHERE id = ANY(?)", (ids,)).rowcount
    if gone != len(ids):
        raise LogTakenElsewhere(f"{len(ids) - gone} of {len(ids)} alert log rows already taken")


def queue_rearms(conn: Any, *, keys: list[str], route: Callable[[str], int | None]) -> None:
    """The desk's re-arms (inside its commit), each to the lease holding its source's
    rule state; a key no lease holds (a source no longer configured) is dropped."""
    rows = [(lease, key) for key in keys if (lease := route(key)) is not None]
    conn.executemany("INSERT INTO rearm_queue (lease, alert_key) VALUES (?, ?)", rows)


def take_rearms(
    conn: Any, lease: int, rearm: Callable[[list[str]], None]
) -> list[Callable[[Any], object]]:
    """Apply the desk's re-arms queued for ``lease`` (``rearm``: the holder's pipeline's)
    and return the write that deletes them, for the holder's next commit: applied and
    deleted together, or, if that commit fails, the holder is rebuilt and they wait."""
    rows = conn.execute(
        "SELECT id, alert_key FROM rearm_queue WHERE lease = ? ORDER BY id", (lease,)
    ).fetchall()
    if not rows:
        return []
    rearm([key for _, key in rows])
    return [partial(_delete_rearms, ids=[row_id for row_id, _ in rows])]


def _delete_rearms(conn: Any, *, ids: list[int]) -> None:
    conn.execute("DELETE FROM rearm_queue WHERE id = ANY(?)", (ids,))


def device_states(conn: Any, ns: str, sources: list[str]) -> Iterator[tuple[str, Any]]:
    """The stored states of namespace ``ns`` whose key is one of ``sources`` or begins
    with ``<source>/`` (replay and health states by device, rule states by device and
    rule, video states by camera), chosen by PostgreSQL: a partition taken over restores
    its own devices without reading the city's."""
    rows = conn.execute(
        "SELECT key, value FROM state WHERE ns = ? AND split_part(key, '/', 1) = ANY(?)"
        " ORDER BY key",
        (ns, sources),
    )
    for key, value in rows:
        yield key, json.loads(value)


def ensure_schema(conn: Any) -> None:
    """Creates the two queues (idempotent), one replica at a time."""
    raw = conn.raw
    with raw.transaction():
        raw.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        raw.execute(SCHEMA)
