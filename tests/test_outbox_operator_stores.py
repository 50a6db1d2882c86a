"""The outbox's operator writes (one requeue, resolve found / not filed, the commands that
waited for a case) and status sync's kept cursor, as one test body on the embedded SQLite
store and on PostgreSQL (a real server, ``simulators/postgres.py``): one code path, one
result, exact values."""

from __future__ import annotations

from typing import Any

import store_backends
from test_outbox_dispatch import command

from case_bridge import outbox
from domain import CommandKind

NOW = 1_760_000_000_000


server = store_backends.server  # fixtures: ``db`` is a fresh store of either kind
db = store_backends.conn


def states(db: Any) -> list[tuple]:
    rows = db.execute("SELECT command_id, state, maybe_filed, next_attempt_ms, last_error"
                      " FROM outbox ORDER BY seq").fetchall()  # fmt: skip
    return [tuple(row) for row in rows]


def test_operator_writes_and_the_sync_cursor_read_alike_on_both_stores(db: Any) -> None:
    for c in (command("INC-a", 1), command("INC-a", 2, CommandKind.ATTACH), command("INC-b", 3)):
        outbox.enqueue(db, c, NOW)
    a1, a2, b3 = (r.seq for r in outbox.pending(db))
    outbox.mark_maybe_filed(db, a1, True)
    outbox.schedule_retry(db, a1, NOW + 5000, "timed out")
    outbox.park(db, a1, "lookup refused")
    outbox.park(db, a2, outbox.NO_CASE)
    outbox.park(db, b3, "HTTP 422")
    assert outbox.listing(db, "parked", 10)[-1]["maybe_filed"] == 1
    assert outbox.resolve_not_filed(db, b3) is False  # not marked
    assert outbox.resolve_found(db, b3, "INC-b", "C-9", NOW) is False
    assert outbox.requeue_one(db, b3) is True
    assert outbox.requeue_one(db, b3) is False  # pending now
    assert outbox.resolve_found(db, a1, "INC-a", "C-1", NOW + 1) is True
    assert outbox.resolve_found(db, a1, "INC-a", "C-2", NOW + 2) is False  # done already
    assert (outbox.case_for(db, "INC-a"), outbox.requeue_caseless(db, "INC-a")) == ("C-1", 1)
    assert outbox.requeue_caseless(db, "INC-a") == 0
    assert states(db) == [
        ("INC-a/1", "delivered", 0, NOW + 5000, ""),
        ("INC-a/2", "pending", 0, 0, outbox.NO_CASE),
        ("INC-b/3", "pending", 0, 0, "HTTP 422"),
    ]
    row = outbox.command_row(db, a1)
    assert row is not None
    assert (row["state"], row["delivered_ms"], row["attempts"]) == ("delivered", NOW + 1, 2)
    assert outbox.command_row(db, 10**12) is None
    outbox.mark_maybe_filed(db, b3, True)
    outbox.park(db, b3, "unclear")
    assert outbox.resolve_not_filed(db, b3) is True
    assert states(db)[2] == ("INC-b/3", "pending", 0, 0, "unclear")

    assert outbox.sync_cursor(db, "changed_cases") is None
    outbox.save_sync_cursor(db, "changed_cases", "2026-11-21T08:00:00+00:00")
    outbox.save_sync_cursor(db, "changed_cases", "2026-11-21T09:00:00+00:00" + "x" * 100)
    assert outbox.sync_cursor(db, "changed_cases") == "2026-11-21T09:00:00+00:00" + "x" * 39
    assert outbox.sync_cursor(db, "other") is None
