"""The PostgreSQL store (gateway/pg_store.py) against a real server (simulators/postgres.py),
side by side with the embedded SQLite store: one code path must give one result on both.

- The builtin scenario's messages through the gateway's real pipeline (engines, health,
  alert flow, incident book, dispatch enrichment) over a SQLite file and over PostgreSQL,
  with a restart half-way (fresh engines restored from each store): every table the
  pipeline writes ends identical, and the restored books agree.
- The outbox's whole lifecycle as one test body run on both backends, exact values.
- The parameter translator, property-tested through both databases: string literals,
  quoted identifiers and comments full of ``?``, ``:name`` and ``%`` come back untouched.
- ``with conn:`` as sqlite3's; ``ensure_schema`` run by three threads at once.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
import store_backends
from hypothesis import given, settings
from hypothesis import strategies as st
from served_app import write_gateway_config
from store_backends import pg_connection

from case_bridge import outbox
from domain import Alert, AlertState, CaseCommand, CommandKind, Location, Priority
from gateway import duplicates, pg_store, store
from gateway.closure_check import ClosureCheck
from gateway.cluster_leases import LeaseDatabaseError
from gateway.config import load_config
from gateway.pipeline import Pipeline, restore
from gateway.service import Gateway
from gateway.silences import SilenceStore, overlapping
from rules.alerting import SilenceLimits
from rules.silences import NewSilence
from simulators.fleet.plan import plan_messages
from simulators.mosquitto import free_port
from simulators.postgres import PostgresServer
from simulators.scenario import BUILTIN_SCENARIO, load_scenario

START_MS = 1_760_000_000_000
BATCH_MS = 10_000
_databases = itertools.count()
server = store_backends.server  # fixtures: a store of either kind
conn = store_backends.conn


# -- the pipeline on both stores ------------------------------------------------------------


class Msg:
    def __init__(self, topic: str, payload: bytes) -> None:
        self.topic, self.payload, self.retain = topic, payload, False


def scenario_batches() -> list[tuple[int, list[Msg]]]:
    """The builtin scenario's messages in 10 s batches, each with the time it is processed."""
    messages = plan_messages(load_scenario(BUILTIN_SCENARIO), seed=1)
    batches: dict[int, list[Msg]] = {}
    for m in messages:
        sent_ms = START_MS + m.offset_ms
        batch = batches.setdefault(m.offset_ms // BATCH_MS, [])
        batch.append(Msg(m.topic, m.payload(START_MS, sent_ms)))
    return [(START_MS + (k + 1) * BATCH_MS, batch) for k, batch in sorted(batches.items())]


def pipeline_over(conn: Any, folder: Path) -> tuple[Pipeline, Gateway]:
    """The gateway's own engines and flow (built from a real config on a scratch SQLite
    file), restored from ``conn`` and writing to it, as ``Gateway.__init__`` wires them."""
    folder.mkdir()
    gw = Gateway(load_config(write_gateway_config(folder, {})))
    gw.conn.close()
    rule_states = {"rule": gw.engine.states, "video": gw.video_engine.states,
                   "health": gw.health.states}  # fmt: skip
    restore(conn, gw.guard, gw.incidents, rule_states, gw.flow, START_MS)
    skew_ms = int(gw.config.ingest.max_future_skew_s * 1000)
    pipeline = Pipeline(conn, gw.registry, gw.guard, gw.engine, gw.incidents, skew_ms,
                        rule_states, gw.health, gw.router, gw.flow,
                        enrich=gw.dispatch.enrich)  # fmt: skip
    return pipeline, gw


TABLES = {
    "readings": "SELECT device_id, ts, seq, values_json, suspect FROM readings ORDER BY rowid",
    "dead_letters": "SELECT received_ms, topic, device_id, reason, detail, payload"
    " FROM dead_letters ORDER BY id",
    "rejection_totals": "SELECT reason, n FROM rejection_totals ORDER BY reason",
    "alerts": "SELECT alert_key, state, ts, incident_id, body, held_by FROM alerts ORDER BY id",
    "state": "SELECT ns, key, value FROM state ORDER BY ns, key",
    "suspected_duplicates": "SELECT id, incident_id, other_incident_id, score, reasons_json,"
    " ts, status FROM suspected_duplicates ORDER BY id",
    "outbox": "SELECT command_id, incident_id, kind, body, state, attempts, created_ms"
    " FROM outbox ORDER BY seq",
}


def tables(conn: Any) -> dict[str, list[tuple]]:
    return {name: [tuple(row) for row in conn.execute(sql).fetchall()]
            for name, sql in TABLES.items()}  # fmt: skip


def book(gw: Gateway) -> dict[str, Any]:
    """What a restored incident book holds: its open incidents and what still fires in each."""
    return {
        incident_id: sorted(alert.key for alert in gw.incidents.persisting(incident_id))
        for incident_id in gw.incidents.open_ids()
    }


def closure_checks(conn: Any, pipeline: Pipeline, gw: Gateway) -> list[tuple]:
    """Two devices' problems fire again at the end; then every open incident's case is at
    verification (the closure check reads the latest stored reading of each alert still
    firing) and the first one's case closes: what was sent, and what stays open."""
    end_ms = START_MS + load_scenario(BUILTIN_SCENARIO).duration_ms
    for device in ("BIN-020", "WL-001"):  # fire again: the problems persist at verification
        place = gw.registry[device].location
        again = Alert(f"{device}/late", device, "late", AlertState.FIRING, "06042",
                      Priority.URGENT, place, end_ms, kind=gw.registry[device].kind)  # fmt: skip
        pipeline.apply_alerts([again], end_ms)
    check = ClosureCheck(conn, pipeline, lambda alert, now_ms: alert)
    opened = gw.incidents.open_ids()
    sent = [
        (c.kind, c.incident_id, c.alert.key, c.alert.ts, c.alert.summary)
        for incident_id in opened
        for c in check.case_status(incident_id, "verifying")
    ]
    check.case_status(opened[0], "closed")
    return [*sent, (opened[0], gw.incidents.open_ids())]


def test_the_pipeline_writes_the_same_rows_on_sqlite_and_postgresql(
    server: PostgresServer, tmp_path: Path
) -> None:
    stores = {"sqlite": store.connect(tmp_path / "embedded.db"), "postgres": pg_connection(server)}
    batches = scenario_batches()
    half = len(batches) // 2
    commands: dict[str, list[str]] = {}
    books: dict[str, dict[str, Any]] = {}
    checks: dict[str, list[tuple]] = {}
    rows: dict[str, dict[str, list[tuple]]] = {}
    for name, conn in stores.items():
        pipeline, _ = pipeline_over(conn, tmp_path / f"{name}-first")
        made = [c for now_ms, batch in batches[:half] for c in pipeline.process(batch, now_ms)]
        # A restart: fresh engines and book, restored from this store alone.
        pipeline, gw = pipeline_over(conn, tmp_path / f"{name}-restarted")
        books[name] = book(gw)
        made += [c for now_ms, batch in batches[half:] for c in pipeline.process(batch, now_ms)]
        commands[name] = [c.command_id for c in made]
        rows[name] = tables(conn)
        checks[name] = closure_checks(conn, pipeline, gw)
    embedded, cluster = rows["sqlite"], rows["postgres"]
    assert commands["sqlite"] == commands["postgres"]
    assert books["sqlite"] == books["postgres"]
    assert books["sqlite"], "the restart came while an incident was open"
    assert checks["sqlite"] == checks["postgres"]
    *flagged, (closed, still_open) = checks["postgres"]
    assert [(kind, key) for kind, _, key, _, _ in flagged] == [
        (CommandKind.ATTACH, "BIN-020/late"), (CommandKind.ATTACH, "WL-001/late")
    ]  # fmt: skip
    assert all("problem persists" in summary for *_, summary in flagged)
    assert closed not in still_open
    for name in TABLES:
        assert embedded[name] == cluster[name], name
    # The builtin scenario's truth: its readings and refusals, its five cases.
    rejections = load_scenario(BUILTIN_SCENARIO).expected_truth()["expected_rejections"]
    assert dict(cluster["rejection_totals"]) == {r: n for r, n in rejections.items() if n}
    assert len(cluster["dead_letters"]) == sum(rejections.values())
    opened = [row for row in cluster["outbox"] if row[2] == str(CommandKind.OPEN)]
    assert len(opened) == 5
    assert len(cluster["readings"]) == 2171 - sum(rejections.values())
    assert [store.count_rows(conn, "readings") for conn in stores.values()] == [
        len(cluster["readings"])
    ] * 2
    for conn in stores.values():
        conn.close()


# -- the outbox on both stores --------------------------------------------------------------


def command(incident: str, n: int, kind: CommandKind = CommandKind.OPEN) -> CaseCommand:
    place = Location(31.3, 120.6, "人民路 100% 号", "320508001001001")
    alert = Alert(f"WL-{n:03d}/water_high", f"WL-{n:03d}", "water_high", AlertState.FIRING,
                  "99101", Priority.NORMAL, place, START_MS + n, values={"level_cm": 31.5},
                  summary="water's over 30 cm?")  # fmt: skip
    return CaseCommand(f"{incident}/{n}", incident, kind, alert, Priority.NORMAL)


def test_the_outbox_lifecycle_is_the_same_on_both_stores(conn: Any) -> None:
    a, b, c, d = (command(f"INC-{i}", i) for i in range(4))
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        for cmd in (a, a, b, c, d):  # a replayed command id is ignored
            outbox.enqueue(conn, cmd, START_MS)
    rows = outbox.pending(conn)
    # PostgreSQL's identity may skip the value a refused insert drew: seqs keep their order
    assert [(r.command_id, r.command) for r in rows] == [(x.command_id, x) for x in (a, b, c, d)]
    s1, s2, s3, s4 = (r.seq for r in rows)
    assert s1 < s2 < s3 < s4
    assert outbox.oldest_pending_ms(conn) == START_MS
    outbox.mark_maybe_filed(conn, s1, True)
    assert [r.maybe_filed for r in outbox.pending(conn, limit=2)] == [True, False]
    outbox.mark_delivered(conn, s1, START_MS + 5)
    outbox.schedule_retry(conn, s2, START_MS + 1000, "timeout " * 100)
    outbox.park(conn, s3, "refused: 'bad class' 100%")
    outbox.mark_case_final(conn, s4, refiled=True, reason="case closed", now_ms=START_MS + 9)
    outbox.park(conn, s1, "too late: only a pending row changes")
    assert outbox.counts(conn) == {"pending": 1, "delivered": 1, "parked": 1, "refiled": 1,
                                   "refused_closed": 0}  # fmt: skip
    (retried,) = outbox.pending(conn)
    assert (retried.seq, retried.attempts, retried.next_attempt_ms) == (s2, 1, START_MS + 1000)
    listed = outbox.listing(conn, None, 10)
    assert [(r["seq"], r["state"], r["attempts"]) for r in listed] == [
        (s4, "refiled", 1), (s3, "parked", 1), (s2, "pending", 1), (s1, "delivered", 1)
    ]  # fmt: skip
    assert listed[2]["last_error"] == ("timeout " * 100)[:500]
    assert listed[3]["delivered_ms"] == START_MS + 5
    assert [r["seq"] for r in outbox.listing(conn, "parked", 10)] == [s3]
    assert [r["seq"] for r in outbox.listing(conn, None, 2, before_seq=s3)] == [s2, s1]
    assert outbox.requeue_parked(conn) == 1
    assert outbox.requeue_parked(conn) == 0
    assert [r.seq for r in outbox.pending(conn)] == [s2, s3]
    assert [r.seq for r in outbox.pending(conn, after_seq=s2)] == [s3]

    outbox.link_case(conn, "INC-0", "C-1", START_MS)
    outbox.link_case(conn, "INC-0", "C-other", START_MS)  # the first link stays
    outbox.link_case(conn, "INC-1", "C-1", START_MS)
    assert (outbox.case_for(conn, "INC-0"), outbox.case_for(conn, "INC-9")) == ("C-1", None)
    assert outbox.incident_for(conn, "C-1") in ("INC-0", "INC-1")
    assert outbox.incident_for(conn, "C-other") is None


def test_case_statuses_keep_their_bound_and_go_with_the_last_link(conn: Any) -> None:
    outbox.link_case(conn, "INC-0", "C-1", START_MS)
    outbox.link_case(conn, "INC-1", "C-1", START_MS)
    at = "2026-01-01T00:00:{:02d}+08:00"
    assert outbox.record_status(conn, "C-1", "accepted", at.format(1), "poll", 1)
    assert not outbox.record_status(conn, "C-1", "accepted", at.format(2), "webhook", 2)
    assert outbox.record_status(conn, "C-1", "dispatched", at.format(3), "webhook", 3)
    assert not outbox.record_status(conn, "C-1", "accepted", at.format(2), "poll", 4)  # older
    assert outbox.record_status(conn, "C-1", "closed", "not a time", "poll", 5)
    with pytest.raises(ValueError):
        outbox.record_status(conn, "C-1", "closed", at.format(9), "email", 6)
    for i in range(outbox.MAX_STATUSES_PER_CASE + 3):
        assert outbox.record_status(conn, "C-1", f"s{i % 2}", f"2026-01-02T{i:06d}", "poll", i)
    kept = outbox.case_statuses(conn, "C-1")
    assert len(kept) == outbox.MAX_STATUSES_PER_CASE
    assert kept[-1] == {"status": "s0", "updated_at": "2026-01-02T000052", "seen_ms": 52,
                        "source": "poll"}  # fmt: skip
    assert outbox.latest_status(conn, "C-1") == kept[-1]
    conn.execute("DELETE FROM case_links WHERE incident_id = 'INC-0'")
    assert len(outbox.case_statuses(conn, "C-1")) == outbox.MAX_STATUSES_PER_CASE
    conn.execute("DELETE FROM case_links WHERE incident_id = 'INC-1'")  # the trigger
    assert outbox.case_statuses(conn, "C-1") == []
    assert outbox.latest_status(conn, "C-1") is None


def test_silences_and_suspected_duplicates_read_alike_on_both_stores(conn: Any) -> None:
    changed: list[int] = []
    kept = SilenceStore(conn, SilenceLimits(), lambda silence, now_ms: changed.append(silence.id))
    body = {"matchers": {"device": "BIN-001"}, "author": "王工", "reason": "井盖 100% 维修",
            "duration_s": 1800}  # fmt: skip
    first = kept.create(NewSilence.model_validate(body), START_MS)
    second = kept.create(NewSilence.model_validate(body), START_MS)
    kept.remove(second.id, "王工", "done: 'ok'?", START_MS + 2)
    assert first.id < second.id and changed == [first.id, second.id, second.id]
    assert kept.get(second.id).changes[0]["reason"] == "done: 'ok'?"
    assert [x.id for x in overlapping(conn, START_MS)] == [first.id, second.id]
    assert [x.id for x in overlapping(conn, START_MS + 10)] == [first.id]
    assert [x.id for x in kept.page(None, 10, None, START_MS + 10)[0]] == [second.id, first.id]
    assert [x.id for x in kept.page("active", 10, None, START_MS + 10)[0]] == [first.id]

    def incident(status: str, last_ts: int) -> dict[str, Any]:
        return {"status": status, "last_ts": last_ts, "firing": {}, "alert_keys": []}

    def pair(pair_id: str, one: str, other: str) -> dict[str, Any]:
        return {"id": pair_id, "incident_id": one, "other_incident_id": other, "score": 0.5,
                "reasons": ["近 50% 距离"], "ts": START_MS}  # fmt: skip

    states = [("incident", "I1", incident("open", START_MS)),
              ("incident", "I2", incident("open", START_MS)),
              ("incident", "I3", incident("closed", START_MS - 10))]  # fmt: skip
    pairs = [pair("P1", "I1", "I2"), pair("P2", "I1", "I3"), pair("P3", "I2", "I3")]
    store.in_transaction(conn, lambda: store.write_states(conn, states))
    store.in_transaction(conn, lambda: store.write_suspects(conn, pairs + pairs[:1]))
    assert [p["id"] for p in duplicates.page(conn, None, 10, None).rows] == ["P3", "P2", "P1"]
    assert [p["id"] for p in duplicates.page(conn, "open", 10, None).rows] == ["P1"]
    moot = duplicates.page(conn, "moot", 1, None)
    assert [p["id"] for p in moot.rows] == ["P3"]
    assert [p["id"] for p in duplicates.page(conn, "moot", 1, moot.next_cursor).rows] == ["P2"]
    assert duplicates.get(conn, "P2")["moot_because"] == [
        {"incident_id": "I3", "status": "closed", "closed_reason": ""}
    ]
    assert not duplicates.decide(conn, "P2", "dismissed", "王工", "moot", START_MS)
    assert duplicates.mark_merged(conn, "I2", "I1", "王工", "one problem", START_MS) == 1
    assert not duplicates.decide(conn, "P1", "dismissed", "王工", "decided", START_MS)
    assert duplicates.get(conn, "P1")["status"] == "merged"
    assert duplicates.expire(conn, START_MS + 1, 10) == 3


# -- the parameter translator ---------------------------------------------------------------

TRICKY = st.text(
    alphabet=st.one_of(
        st.sampled_from("?:%'\"-/*\n $1;"), st.characters(blacklist_categories=("Cs",))
    ).filter(lambda ch: ch != "\x00"),
    max_size=30,
)
NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)


def quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@st.composite
def statements(draw) -> tuple[str, Any, list[Any]]:
    """A SELECT of literals and parameters with comments between them: the SQL, its
    parameters and the row it must return."""
    named = draw(st.booleans())
    columns, expected = [], []
    params: Any = {} if named else []
    for i in range(draw(st.integers(1, 6))):
        value = draw(TRICKY)
        if draw(st.booleans()):
            columns.append(quoted(value))
        elif named:
            name = f"{draw(NAMES)}_{i}"
            params[name] = value
            columns.append(f":{name}")
        else:
            params.append(value)
            columns.append("?")
        expected.append(value)
        if draw(st.booleans()):
            # (PostgreSQL nests block comments, SQLite does not: neither holds a * here)
            columns[-1] += f" /* {draw(TRICKY).replace('*', '')} */"
        if draw(st.booleans()):
            columns[-1] += f" -- {draw(TRICKY).replace(chr(10), ' ').replace(chr(13), ' ')}\n"
        if draw(st.booleans()):
            columns[-1] += f' AS "{draw(TRICKY).replace(chr(34), "")[:20] or "c"}{i}"'
    return "SELECT " + ", ".join(columns), params, expected


@pytest.fixture(scope="module")
def session(server: PostgresServer) -> Iterator[pg_store.PgConnection]:
    """One session for all the property's examples (a database each would cost 50 creates)."""
    conn = pg_store.connect(server.dsn())
    yield conn
    conn.close()


@settings(max_examples=50, deadline=None)
@given(case=statements())
def test_literals_comments_and_parameters_read_back_alike_on_both(
    session: pg_store.PgConnection, case: tuple[str, Any, list[Any]]
) -> None:
    sql, params, expected = case
    assert session.execute(sql, params).fetchone() == tuple(expected)
    with closing(sqlite3.connect(":memory:")) as embedded:
        assert embedded.execute(sql, params).fetchone() == tuple(expected)


def test_the_translator_escapes_percent_and_keeps_casts() -> None:
    assert pg_store.translate("SELECT '%' || ? LIKE '%a'")[0] == "SELECT '%%' || %s LIKE '%%a'"
    assert pg_store.translate("SELECT 1::text, :a, ?2, ?1")[0] == (
        "SELECT 1::text, %(a)s, %(p2)s, %(p1)s"
    )
    # Without parameters psycopg sends the text as it is: a doubled % would stay doubled.
    assert pg_store.translate("SELECT '100%'")[0] == "SELECT '100%'"
    assert pg_store.translate("BEGIN IMMEDIATE")[0] == "BEGIN"
    with pytest.raises(psycopg.ProgrammingError):
        pg_store.translate("SELECT ?, :a")


def test_parameters_are_checked_as_sqlite3_checks_them(conn: Any) -> None:
    with pytest.raises(store.DatabaseError):
        conn.execute("SELECT ?, ?", (1,))
    with pytest.raises(store.DatabaseError):
        conn.execute("SELECT 1", (1,))
    assert conn.execute("SELECT ?1 + ?2, ?1", (2, 3)).fetchone() == (5, 2)


# -- transactions ---------------------------------------------------------------------------


def test_with_conn_commits_or_rolls_back_and_never_closes(conn: Any) -> None:
    insert = "INSERT INTO rejection_totals (reason, n) VALUES (?, ?)"
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        assert conn.in_transaction
        conn.execute(insert, ("kept", 1))
    assert not conn.in_transaction
    with pytest.raises(RuntimeError), conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(insert, ("undone", 2))
        raise RuntimeError("the work failed")
    assert not conn.in_transaction
    with conn:  # no transaction open: the statement committed on its own
        conn.execute(insert, ("alone", 3))
    with pytest.raises(store.DatabaseError), conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(insert, ("twice", 4))
        conn.execute(insert, ("twice", 5))  # the primary key refuses it
    assert not conn.in_transaction
    assert store.rejection_counts(conn) == {"kept": 1, "alone": 3}
    cursor = conn.execute(
        "INSERT INTO silences (matchers_json, author, reason, starts_ms, ends_ms, created_ms)"
        " VALUES ('{}', 'a', 'r', 1, 2, 3)"
    )
    assert (cursor.lastrowid, cursor.fetchall()) == (1, [])
    assert conn.execute("UPDATE silences SET ends_ms = 9").rowcount == 1
    assert store.in_transaction(conn, lambda: conn.execute("SELECT 7").fetchone()) == (7,)


# -- schema and connection ------------------------------------------------------------------


def test_three_replicas_make_the_schema_together(server: PostgresServer) -> None:
    dsn = server.create_database(f"schema_{next(_databases)}")
    conns = [pg_store.connect(dsn) for _ in range(3)]
    start = threading.Barrier(3)
    failures: list[BaseException] = []

    def make(conn: pg_store.PgConnection) -> None:
        start.wait(timeout=10)
        try:
            pg_store.ensure_schema(conn)
        except BaseException as exc:  # reported below, with the thread's error
            failures.append(exc)

    threads = [threading.Thread(target=make, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert failures == []
    pg_store.ensure_schema(conns[0])  # and again, on a made schema
    tables_made = (
        conns[0].execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    )
    assert tables_made == (17,)
    for c in conns:
        c.close()


def test_the_derived_schema_has_the_embedded_tables_and_columns(
    server: PostgresServer, tmp_path: Path
) -> None:
    embedded = store.connect(tmp_path / "store.db")
    names = [row[0] for row in embedded.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )]  # fmt: skip
    expected = {n: [c[1] for c in embedded.execute(f"PRAGMA table_info({n})")] for n in names}
    embedded.close()
    cluster = pg_connection(server)
    found: dict[str, list[str]] = {}
    for table, column in cluster.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND column_name != 'rowid' ORDER BY ordinal_position"
    ):
        found.setdefault(table, []).append(column)
    assert found == expected
    cluster.execute(
        "INSERT INTO audit (ts_ms, actor, role, kind, action, target, reason)"
        " VALUES (1, 'a', 'admin', 'user', 'add', 't', 'r')"
    )
    for change in ("UPDATE audit SET reason = 'x'", "DELETE FROM audit"):
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            cluster.execute(change)
    cluster.close()


def test_a_lost_session_is_replaced_between_transactions_never_inside_one(
    server: PostgresServer,
) -> None:
    conn = pg_connection(server)

    def end_session() -> None:  # as the server's idle-in-transaction timeout or a restart
        with psycopg.connect(server.dsn(), autocommit=True) as admin:
            pid = conn.raw.info.backend_pid
            assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0]

    insert = "INSERT INTO rejection_totals (reason, n) VALUES (?, ?)"
    end_session()
    with pytest.raises(psycopg.OperationalError):
        conn.execute(insert, ("lost", 1))  # the loss is found by the next statement
    conn.execute(insert, ("alone", 1))
    assert conn.reopened == 1
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(insert, ("first of the batch", 2))
    end_session()
    with pytest.raises(psycopg.OperationalError):
        conn.execute(insert, ("second of the batch", 3))
    with pytest.raises(psycopg.OperationalError, match="inside a transaction"):
        conn.execute(insert, ("third of the batch", 4))  # never alone, on a new session
    assert conn.reopened == 1
    conn.rollback()  # what the caller's except does: the server rolled back already
    assert not conn.in_transaction
    batch = store.Batch()
    batch.reject(START_MS, "t", "d", "retried", "", b"")
    store.commit(conn, batch)
    assert conn.reopened == 2
    assert store.rejection_counts(conn) == {"alone": 1, "retried": 1}
    with psycopg.connect(server.dsn(), autocommit=True) as admin:  # a store that is gone
        admin.execute(f'DROP DATABASE "{conn.raw.info.dbname}" WITH (FORCE)')
    for _ in range(2):  # found lost, then refused again: a store failure, never a crash
        with pytest.raises(store.DatabaseError):
            store.commit(conn, batch)
    conn.close()


def test_a_refused_connection_names_no_password() -> None:
    port = free_port()
    with pytest.raises(LeaseDatabaseError) as refused:
        pg_store.connect(f"host=127.0.0.1 port={port} user=x dbname=y", "s3cret-Passw0rd")
    assert "s3cret-Passw0rd" not in str(refused.value)
    assert f"127.0.0.1:{port}" in str(refused.value)


def test_a_refused_payload_holding_nul_is_kept_on_both_stores(conn: Any) -> None:
    """PostgreSQL's text refuses NUL where SQLite takes it: a dead letter's payload, topic,
    device id and detail are kept with NUL written out, and the batch commits."""
    batch = store.Batch()
    batch.reject(
        1, "citygw/v1/MH\x00/telemetry", "MH\x00", "malformed_json", "x\x00", b'{"ts": 1\x00}'
    )
    store.commit(conn, batch)
    rows = conn.execute("SELECT topic, device_id, detail, payload FROM dead_letters").fetchall()
    assert [tuple(row) for row in rows] == [
        ("citygw/v1/MH\\x00/telemetry", "MH\\x00", "x\\x00", '{"ts": 1\\x00}')
    ]
