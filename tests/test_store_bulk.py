"""A batch's readings and states go to SQLite as one JSON array each (gateway/store.py,
``json_each``): the rows stored are exactly those the row-by-row insert stores."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import store

text = st.text(max_size=40)  # any code point but lone surrogates: quotes, \, NUL, CJK
int64 = st.integers(-(2**63), 2**63 - 1)
readings = st.lists(
    st.tuples(text, int64, st.one_of(st.none(), int64), text, st.sampled_from([0, 1])),
    max_size=30,
)
states = st.lists(st.tuples(text, text, st.one_of(st.none(), text)), max_size=30)


def stored(conn: sqlite3.Connection) -> tuple[list[tuple], list[tuple]]:
    return (
        conn.execute("SELECT device_id, ts, seq, values_json, suspect FROM readings").fetchall(),
        conn.execute("SELECT ns, key, value FROM state ORDER BY ns, key").fetchall(),
    )


def reference(conn: sqlite3.Connection, rows: list[tuple], state_rows: list[tuple]) -> None:
    """The row-by-row insert: one statement step per row, last state of a key wins."""
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO readings VALUES (?, ?, ?, ?, ?)", rows)
    for ns, key, value in state_rows:
        if value is None:
            conn.execute("DELETE FROM state WHERE ns = ? AND key = ?", (ns, key))
        else:
            conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?, ?)", (ns, key, value))
    conn.execute("COMMIT")


@settings(max_examples=60, deadline=None)
@given(readings, states)
def test_the_bulk_insert_stores_exactly_what_the_row_by_row_insert_does(
    tmp_path_factory, rows, state_rows
):
    folder = tmp_path_factory.mktemp("bulk")
    bulk, rowwise = store.connect(folder / "bulk.db"), store.connect(folder / "rows.db")
    batch = store.Batch()
    batch.readings.extend(rows)
    batch._state_rows.extend(state_rows)
    store.commit(bulk, batch)
    reference(rowwise, rows, state_rows)
    assert stored(bulk) == stored(rowwise)
    assert [type(v) for row in stored(bulk)[0] for v in row] == [
        type(v) for row in stored(rowwise)[0] for v in row
    ]
