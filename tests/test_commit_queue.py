"""The pipeline's commits on a thread (gateway/commit_queue.py), on a real SQLite file.

A gate holds a background commit mid-way (after its transaction opened), so a test can
act while a commit is really in flight: the store, its locks and the thread are all real.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import store
from gateway.commit_queue import CommitQueue, StoreUnavailable


class GatedCommit:
    """``store.commit`` whose transaction waits at ``gate`` (when closed) before COMMIT."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.gate = threading.Event()
        self.gate.set()
        self.inside = threading.Event()

    def __call__(self, batch: store.Batch) -> None:
        def held(conn: sqlite3.Connection) -> None:
            self.inside.set()
            assert self.gate.wait(10), "the test never opened the gate"

        batch.also.insert(0, held)
        try:
            store.commit(self.conn, batch)
        finally:
            batch.also.remove(held)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    store.connect(tmp_path / "gw.db").close()
    return tmp_path / "gw.db"


def reading_batch(device: str, seq: int, state: dict) -> store.Batch:
    batch = store.Batch()
    batch.readings.append((device, 1_700_000_000_000 + seq, seq, '{"fill_pct": 1}', 0))
    batch.states.append(("replay", device, state))
    return batch


def rows(db: Path) -> tuple[list[int], dict]:
    """(sequence numbers stored, in order; the stored replay states) from a connection of
    the test's own, as any other reader of the store sees them."""
    with sqlite3.connect(db) as conn:
        seqs = [r[0] for r in conn.execute("SELECT seq FROM readings ORDER BY rowid")]
        states = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM state")}
    return seqs, states


def test_batches_queued_behind_a_commit_in_flight_are_saved_after_it_in_order(db):
    commit = GatedCommit(store.connect(db))
    queue = CommitQueue(commit, Counter(), background=True)
    live = {"last": 1}
    queue.queue(reading_batch("BIN-1", 1, live))
    commit.gate.clear()
    assert queue.start()
    assert commit.inside.wait(10)
    # While the first commit is held mid-transaction, the loop goes on: two more batches,
    # the live state changed after each was queued.
    live["last"] = 2
    assert queue.queue(reading_batch("BIN-1", 2, live)) == 2
    live["last"] = 3
    assert queue.queue(reading_batch("BIN-1", 3, live)) == 3
    live["last"] = 99  # never queued: no commit may write it
    assert not queue.start()  # one commit at a time
    assert rows(db) == ([], {})  # readers see nothing of the open transaction
    commit.gate.set()
    queue.settle()
    assert queue.saved_upto == 1 and not queue.failed
    assert rows(db) == ([1], {"BIN-1": {"last": 1}})  # as it stood when queued, not now
    assert queue.start()
    queue.settle()
    assert queue.saved_upto == 3 and queue.idle
    assert rows(db) == ([1, 2, 3], {"BIN-1": {"last": 3}})
    queue.close()


def test_a_write_that_cannot_wait_commits_after_everything_made_before_it(db):
    commit = GatedCommit(store.connect(db))
    queue = CommitQueue(commit, Counter(), background=True)
    queue.queue(reading_batch("BIN-1", 1, {"last": 1}))
    commit.gate.clear()
    queue.start()
    assert commit.inside.wait(10)
    queue.queue(reading_batch("BIN-1", 2, {"last": 2}))
    # The flight ends only once save waits on it (settle is its first step).
    settle, waiting = queue.settle, threading.Event()

    def settling() -> None:
        waiting.set()
        settle()

    queue.settle = settling  # type: ignore[method-assign]
    opener = threading.Thread(target=lambda: waiting.wait(30) and commit.gate.set())
    opener.start()
    queue.save(reading_batch("BIN-2", 7, {"last": 7}))
    opener.join(30)
    assert queue.saved_upto == 3 and queue.idle
    assert rows(db) == ([1, 2, 7], {"BIN-1": {"last": 2}, "BIN-2": {"last": 7}})
    queue.close()


def test_a_refused_background_commit_keeps_its_batch_and_those_after_it(db):
    """``max_page_count`` makes SQLite itself answer "database or disk is full"."""
    conn = store.connect(db)
    counters: Counter[str] = Counter()
    queue = CommitQueue(GatedCommit(conn), counters, background=True)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    big = store.Batch()
    big.readings += [("BIN-1", i, i, "x" * 500, 0) for i in range(1, 500)]
    big.states.append(("replay", "BIN-1", {"last": 499}))
    queue.queue(big)
    queue.start()
    queue.queue(reading_batch("BIN-1", 500, {"last": 500}))
    queue.settle()
    assert queue.failed and queue.saved_upto == 0 and counters["commit_failures"] == 1
    assert not queue.start()  # nothing goes past a refused commit
    with pytest.raises(StoreUnavailable):
        queue.save()
    assert rows(db) == ([], {})
    conn.execute("PRAGMA max_page_count = 1073741823")
    queue.save()
    assert not queue.failed and queue.saved_upto == 2 and queue.idle
    seqs, states = rows(db)
    assert seqs == list(range(1, 501)) and states == {"BIN-1": {"last": 500}}
    queue.close()


def test_an_error_not_the_stores_drops_that_commit_alone_and_ingest_goes_on(db):
    """Kept, a batch whose write has a bug would fail every retry and stop all ingest; it
    is dropped instead, its tickets never to be acknowledged, and the next commit goes."""
    conn = store.connect(db)
    counters: Counter[str] = Counter()
    queue = CommitQueue(lambda batch: store.commit(conn, batch), counters, background=True)
    broken = reading_batch("BIN-1", 1, {"last": 1})

    def bug(conn: sqlite3.Connection) -> None:
        raise RuntimeError("a bug in a write")

    broken.also.append(bug)
    first = queue.queue(broken)
    second = queue.queue(reading_batch("BIN-1", 2, {"last": 2}))
    queue.start()
    queue.settle()
    assert not queue.failed and queue.saved_upto == second
    assert queue.dropped(first) and queue.dropped(second)
    assert rows(db) == ([], {}) and counters["commit_errors"] == 1
    third = queue.queue(reading_batch("BIN-1", 3, {"last": 3}))
    queue.start()
    queue.settle()
    assert queue.saved_upto == third and not queue.dropped(third)
    assert rows(db) == ([3], {"BIN-1": {"last": 3}})
    queue.close()


def test_a_callers_own_batch_failing_with_a_bug_reaches_the_caller_and_only_it_is_dropped(db):
    conn = store.connect(db)
    queue = CommitQueue(lambda batch: store.commit(conn, batch), Counter())
    queue.queue(reading_batch("BIN-1", 1, {"last": 1}))
    bad = reading_batch("BIN-2", 2, {"last": 2})

    def bug(conn: sqlite3.Connection) -> None:
        raise ValueError("refused by the caller's own write")

    bad.also.append(bug)
    with pytest.raises(ValueError):
        queue.save(bad)
    assert rows(db) == ([1], {"BIN-1": {"last": 1}}) and not queue.failed and queue.idle


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["queue", "start", "settle", "save"]),
            st.sampled_from(["A", "B"]),
            st.one_of(st.none(), st.integers(0, 9)),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_whatever_the_interleaving_the_store_ends_with_every_batch_once_and_the_last_state(
    tmp_path_factory, steps
):
    """Queue, start, settle and synchronous saves in any order: once everything is saved
    the store holds every reading once, in the order made, and each key's last state
    (None deletes it), as if each batch had committed alone, in order."""
    path = tmp_path_factory.mktemp("q") / "gw.db"
    conn = store.connect(path)
    queue = CommitQueue(lambda batch: store.commit(conn, batch), Counter(), background=True)
    expected_seqs: list[int] = []
    expected_states: dict[str, dict] = {}
    for n, (action, key, value) in enumerate(steps):
        state = None if value is None else {"v": value}
        if action in ("queue", "save"):
            batch = reading_batch(key, n, state)  # type: ignore[arg-type]
            expected_seqs.append(n)
            if state is None:
                expected_states.pop(key, None)
            else:
                expected_states[key] = state
            if action == "queue":
                queue.queue(batch)
            else:
                queue.save(batch)
        elif action == "start":
            queue.start()
        else:
            queue.settle()
    queue.save()
    assert queue.idle and queue.saved_upto == queue.last_ticket
    assert rows(path) == (expected_seqs, expected_states)
    queue.close()
    conn.close()
