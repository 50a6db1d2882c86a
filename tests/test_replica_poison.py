"""A partition's batch that the store refuses for one message's content (gateway/replica_poison.py),
and a batch that comes again after its commit (gateway/replica_partitions.py), through a real
replica's NATS callback (``Replica._batch``) on a real PostgreSQL (simulators/postgres.py).

No payload the codecs accept makes PostgreSQL refuse a commit today (the module docstring of
gateway/replica_poison.py says why), so the refusals here are PostgreSQL's own, made to bite
by a narrower store than the codecs were bounded for: ``readings.seq`` as a 32-bit integer
(a seq past 2**31 is SQLSTATE 22003, numeric value out of range, as a bigint would be past
2**63) or a trigger raising a data exception (class 22). NATS itself is not needed: the
callback is what the ingest calls with each delivery (its stream sequences included), and
the redelivery of a batch is that callback called again with it. Which errors are blamed
on a message is checked against the errors a real server and driver give.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import store_backends
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.nats_ingest import IngestMessage
from gateway import pg_store, replica_committed
from gateway.config import load_config
from gateway.pipeline import StoreUnavailable
from gateway.replica import Replica
from gateway.replica_poison import (
    MAX_REFUSED_IN_A_ROW,
    ComeAgain,
    StoreRefusesAll,
    content_refusal,
)
from simulators.postgres import PostgresServer
from simulators.scenario import BUILTIN_SCENARIO

server = store_backends.server  # a real PostgreSQL per module
_databases = itertools.count()
_stream = itertools.count(1)  # stream sequences, as the ingest stream numbers its messages
POISON_SEQ = 2**31  # past a 32-bit column, within the codec's 64 bits
REFUSED_22003 = "the store refused it (SQLSTATE 22003)"


def recent_seqs(state: dict) -> list[int]:
    """The sequence numbers a replay state remembers, oldest first."""
    return [seq for first, last in state["runs"] for seq in range(first, last + 1)]


class Cluster:
    """One replica holding the only partition, on a fresh database of ``server``."""

    def __init__(self, server: PostgresServer, folder: Path, lease_ttl_s: float = 300) -> None:
        self.dsn = server.create_database(f"poison_{next(_databases)}")
        config = {
            "gateway_id": "poison-test",
            "mqtt": {"url": "mqtt://127.0.0.1:1"},  # unused: devices reach replicas via NATS
            "devices": {"registry": str(BUILTIN_SCENARIO.parent / "devices.csv")},
            "store": {"path": str(folder / "local.db")},
            "case_platform": {"url": "http://127.0.0.1:9", "token": "t"},
            "api": {"enabled": False},
            "cluster": {
                "postgres_dsn": self.dsn,
                "replica_id": "r1",
                # By default held for the whole test: no lease tick runs here.
                "lease_ttl_s": lease_ttl_s,
                "lease_tick_s": min(1.0, lease_ttl_s / 3),
                "nats": {"url": "nats://127.0.0.1:1", "partition_count": 1},  # never started
            },
        }
        path = folder / "gateway.yaml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True))
        self.replica = Replica(load_config(path))
        held = self.replica.keeper.tick()
        assert 0 in held, held
        self.replica.reading = {0: held[0]}
        self.start_ms = int(time.time() * 1000) - 3_600_000
        self.ticks = itertools.count()

    def message(self, device_id: str, seq: int, **values: Any) -> IngestMessage:
        """A device's telemetry, each later than the one before."""
        ts = self.start_ms + 1000 * next(self.ticks)
        body = {"ts": ts, "seq": seq, "values": values}
        payload = json.dumps(body).encode()
        return IngestMessage(f"citygw/v1/{device_id}/telemetry", payload, 0, next(_stream))

    def bin(self, seq: int, fill_pct: float = 30) -> IngestMessage:
        return self.message("BIN-001", seq, fill_pct=fill_pct)

    def cover(self, seq: int, lid_open: bool = False) -> IngestMessage:
        return self.message("MH-001", seq, tilt_deg=1, lid_open=lid_open)

    def sql(self, statement: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(statement, params or None)
            return cursor.fetchall() if cursor.description else []

    def readings(self) -> list[tuple[str, int]]:
        return self.sql("SELECT device_id, seq FROM readings ORDER BY rowid")

    def dead_letters(self) -> list[tuple[str, str, str, str]]:
        return self.sql("SELECT device_id, reason, detail, payload FROM dead_letters ORDER BY id")

    def totals(self) -> dict[str, int]:
        return dict(self.sql("SELECT reason, n FROM rejection_totals"))

    def replay_state(self, device_id: str) -> dict[str, Any]:
        (value,) = self.sql(
            "SELECT value FROM state WHERE ns = 'replay' AND key = %s", (device_id,)
        )
        return json.loads(value[0])

    def alerts_logged(self) -> list[str]:
        return [json.loads(body)["key"] for (body,) in self.sql("SELECT body FROM alert_log")]

    def close(self) -> None:
        for worker in self.replica.workers.values():
            worker.conn.close()
        self.replica.keeper.table.conn.close()


@pytest.fixture
def cluster(server: PostgresServer, tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(server, tmp_path)
    yield made
    made.close()


@pytest.fixture
def short_lease(server: PostgresServer, tmp_path: Path) -> Iterator[Cluster]:
    """A lease of 1.5 s: a delivery's poison search gets a third of it."""
    made = Cluster(server, tmp_path, lease_ttl_s=1.5)
    yield made
    made.close()


@pytest.fixture(scope="module")
def dsn(server: PostgresServer) -> str:
    """An empty database for the tests of errors (each in a session of its own)."""
    return server.create_database(f"errors_{next(_databases)}")


def narrow_seq(c: Cluster) -> None:
    c.sql("ALTER TABLE readings ALTER COLUMN seq TYPE integer")


def refuse_every_reading(c: Cluster) -> None:
    """A store gone wrong: every reading refused with a data exception (22023)."""
    c.sql(
        "CREATE FUNCTION refuse_all() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'refused' USING ERRCODE = '22023'; END $$"
    )
    c.sql("CREATE TRIGGER refuse_all BEFORE INSERT ON readings FOR EACH ROW"
          " EXECUTE FUNCTION refuse_all()")  # fmt: skip


def good(messages: list[IngestMessage]) -> list[tuple[str, int]]:
    """The (device, seq) pairs of the messages a 32-bit seq column takes, in order."""
    pairs = [(m.topic.split("/")[2], json.loads(m.payload)["seq"]) for m in messages]
    return [pair for pair in pairs if pair[1] < POISON_SEQ]


def test_the_poison_messages_are_dead_letters_and_the_rest_commits_once(cluster):
    c = cluster
    narrow_seq(c)
    session = c.replica._worker(0).conn.raw.info.backend_pid
    batch = [c.cover(0), c.bin(1), c.cover(2), c.bin(POISON_SEQ + 3), c.cover(4), c.bin(5),
             c.cover(6), c.bin(7), c.cover(POISON_SEQ + 8), c.bin(9), c.cover(10, lid_open=True),
             c.bin(11)]  # fmt: skip
    c.replica._batch(batch)

    assert c.readings() == good(batch)
    assert len(c.readings()) == 10
    assert c.dead_letters() == [
        ("BIN-001", "store_refused", REFUSED_22003, batch[3].payload.decode()),
        ("MH-001", "store_refused", REFUSED_22003, batch[8].payload.decode()),
    ]
    assert c.totals() == {"store_refused": 2}
    counters = c.replica.counters
    assert (counters["store_refused"], counters["batches"], counters["messages"]) == (2, 1, 12)
    # Rule and replay state saw the good messages once, in order, and the poison never:
    # the open lid after the second poison message fired one alert, forwarded once.
    assert c.alerts_logged() == ["MH-001/cover_anomaly"]
    bin_state = c.replay_state("BIN-001")
    assert recent_seqs(bin_state) == [1, 5, 7, 9, 11]
    assert bin_state["last_ts"] == json.loads(batch[11].payload)["ts"]
    assert recent_seqs(c.replay_state("MH-001")) == [0, 2, 4, 6, 10]
    # Every rebuild of the worker read the store back on the session it had.
    assert c.replica.workers[0].conn.raw.info.backend_pid == session

    # The partition goes on: the next batch commits at once.
    after = [c.bin(12), c.cover(13), c.bin(14)]
    c.replica._batch(after)
    assert c.readings() == good(batch + after)
    assert (counters["batches"], counters["store_refused"]) == (2, 2)
    assert c.totals() == {"store_refused": 2}


def test_a_settled_batch_that_comes_again_changes_nothing(cluster):
    """The ack of a batch whose poison was dead-lettered is lost: the whole batch comes
    again, to the same worker and then to one rebuilt from the store (a takeover)."""
    c = cluster
    narrow_seq(c)
    batch = [c.bin(1), c.bin(POISON_SEQ + 2), c.bin(3), c.bin(4)]
    c.replica._batch(batch)
    refused = [("BIN-001", "store_refused", REFUSED_22003, batch[1].payload.decode())]
    assert c.dead_letters() == refused
    assert c.readings() == [("BIN-001", 1), ("BIN-001", 3), ("BIN-001", 4)]

    c.replica._batch(batch)
    c.replica._drop_worker(0)
    c.replica._batch(batch)
    assert c.dead_letters() == refused
    assert c.readings() == [("BIN-001", 1), ("BIN-001", 3), ("BIN-001", 4)]
    assert c.totals() == {"store_refused": 1}
    assert c.replica.counters["already_committed"] == 8
    assert c.replica.counters["store_refused"] == 1


def test_a_batch_after_an_in_doubt_commit_files_no_false_duplicate(cluster):
    """The session is lost during COMMIT: ``_batch`` raised, the worker is rebuilt from the
    store, and the batch (which did commit) comes again with two newer messages behind it,
    which NATS fetched in the same delivery."""
    c = cluster
    batch = [c.bin(seq) for seq in range(1, 7)]
    c.replica._batch(batch)
    c.replica._drop_worker(0)  # what _batch does when its commit's outcome is in doubt
    again = [*batch, c.bin(7), c.bin(8)]
    c.replica._batch(again)

    assert c.readings() == [("BIN-001", seq) for seq in range(1, 9)]
    assert c.dead_letters() == []
    assert c.replica.counters["already_committed"] == 6

    # Its ack lost again, and the next deliveries cut it otherwise: its first three alone,
    # then the rest with newer ones (the record keeps what is not behind the consumer).
    c.replica._batch(again[:3])
    c.replica._drop_worker(0)
    c.replica._batch([*again[3:], c.bin(9)])
    assert c.readings() == [("BIN-001", seq) for seq in range(1, 10)]
    assert c.dead_letters() == []
    assert c.replica.counters["already_committed"] == 6 + 8

    # A device's own retransmission (the same payload as a new stream message) is still
    # what it always was: a duplicate, refused and counted.
    resent = IngestMessage(batch[0].topic, batch[0].payload, 0, next(_stream))
    c.replica._batch([resent])
    assert [(d, reason) for d, reason, _, _ in c.dead_letters()] == [("BIN-001", "duplicate")]
    assert len(c.readings()) == 9


@pytest.fixture(scope="module")
def state_store(dsn: str) -> Iterator[pg_store.PgConnection]:
    conn = pg_store.connect(dsn)
    pg_store.ensure_schema(conn)
    yield conn
    conn.close()


@settings(max_examples=30, deadline=None)
@given(
    entries=st.dictionaries(
        st.integers(1, 2**64 - 1), st.integers(0, 2**32 - 1), max_size=300
    ),  # stream sequences are unsigned 64-bit
    refused=st.dictionaries(
        st.text(max_size=64), st.integers(1, MAX_REFUSED_IN_A_ROW), max_size=MAX_REFUSED_IN_A_ROW
    ),
)
def test_the_record_reads_back_as_written(state_store, entries, refused):
    record = replica_committed.Committed(entries, refused)
    replica_committed.write(state_store, partition=3, record=record)
    assert replica_committed.load(state_store, 3) == record


def test_a_store_refusing_its_own_writes_dead_letters_nothing(cluster):
    """The store refuses every commit of the partition's own writes (a constraint on the
    state table): the dead letter's commit fails too, so no message is blamed; the batch
    comes again, and commits whole once the store takes it."""
    c = cluster
    c.sql("ALTER TABLE state ADD CONSTRAINT no_record CHECK (ns <> 'ingest_committed')")
    batch = [c.bin(1), c.cover(2), c.bin(3)]
    with pytest.raises(StoreUnavailable):
        c.replica._batch(batch)
    assert (c.readings(), c.dead_letters()) == ([], [])
    assert c.replica.counters["batch_refused_StoreUnavailable"] == 1
    assert "store_refused" not in c.replica.counters

    c.sql("ALTER TABLE state DROP CONSTRAINT no_record")
    c.replica._batch(batch)
    assert c.readings() == good(batch)
    assert c.dead_letters() == []


# Every device of the scenario's registry (one partition holds them all here).
DEVICES = ["BIN-001", "BIN-010", "BIN-011", "BIN-012", "BIN-020", "MH-001", "MH-002",
           "MH-003", "WL-001"]  # fmt: skip


def reading(c: Cluster, device_id: str, seq: int) -> IngestMessage:
    """A plain reading of any of the scenario's kinds."""
    if device_id.startswith("BIN"):
        return c.message(device_id, seq, fill_pct=30)
    if device_id.startswith("MH"):
        return c.message(device_id, seq, tilt_deg=1, lid_open=False)
    return c.message(device_id, seq, level_cm=5)


def test_a_store_refusing_every_reading_stops_the_search_at_its_bound(cluster):
    """Every reading refused (a trigger gone wrong): the messages of MAX_REFUSED_IN_A_ROW
    devices are dead letters, the next device's stops the search, and the partition waits
    for the store, shown stalled in the replica's /stats, however often the batch comes
    again; once mended, the rest commits and the count starts over."""
    c = cluster
    refuse_every_reading(c)
    batch = [reading(c, device, seq) for seq, device in enumerate(DEVICES + DEVICES[:3])]
    for _ in range(2):
        with pytest.raises(StoreRefusesAll):
            c.replica._batch(batch)
    assert [d[:2] for d in c.dead_letters()] == [(d, "store_refused") for d in DEVICES[:8]]
    assert MAX_REFUSED_IN_A_ROW == 8
    assert c.totals() == {"store_refused": 8}
    counters = c.replica.counters
    assert counters["batch_refused_StoreRefusesAll"] == 2
    assert c.replica.stats()["stalled_partition_0"] == 2
    # Counted as they committed, though both deliveries ended refused: the dead letters,
    # and the second's halves that found them done (1-6, 7, 8; the 9th stops it).
    assert (counters["store_refused"], counters["already_committed"]) == (8, 8)

    c.sql("DROP TRIGGER refuse_all ON readings")
    c.replica._batch(batch)
    assert c.readings() == [(m.topic.split("/")[2], i) for i, m in enumerate(batch)][8:]
    assert c.replica.counters["already_committed"] == 8 + 8
    assert c.replica.workers[0].committed.refused == {}
    assert "stalled_partition_0" not in c.replica.stats()


def test_one_device_s_poison_in_a_row_never_stalls_the_partition(cluster):
    """Nine poison messages in a row from one device are that device's content: all nine
    are dead letters, and the good readings behind them commit."""
    c = cluster
    narrow_seq(c)
    batch = [c.bin(POISON_SEQ + seq) for seq in range(9)] + [c.cover(seq) for seq in range(5)]
    c.replica._batch(batch)
    assert [d[:3] for d in c.dead_letters()] == [("BIN-001", "store_refused", REFUSED_22003)] * 9
    assert c.readings() == [("MH-001", seq) for seq in range(5)]
    counters = c.replica.counters
    assert (counters["store_refused"], counters["batches"], counters["messages"]) == (9, 1, 14)
    assert [k for k in counters if k.startswith(("batch_refused_", "stalled_"))] == []
    assert c.replica.workers[0].committed.refused == {}


def real_error(dsn: str, statement: str, **session: Any) -> psycopg.Error:
    """The error PostgreSQL gives for ``statement`` (``session``: connect options)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5, **session) as conn:
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            return exc
    raise AssertionError(f"{statement!r} did not fail")


def raising(sqlstate: str) -> str:
    return f"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{sqlstate}'; END $$"


@pytest.mark.parametrize(
    ("statement", "options", "expected"),
    [
        ("SELECT 1::int4 + 2147483647", {}, "22003"),  # integer out of range
        ("SELECT 'x'::int", {}, "22P02"),  # invalid text representation
        (  # string data right truncation: a bounded column
            "DO $$ BEGIN CREATE TEMP TABLE bounded (v varchar(2));"
            " INSERT INTO bounded VALUES ('abc'); END $$",
            {},
            "22001",
        ),
        (raising("22023"), {}, "22023"),  # invalid parameter value: a data exception
        (raising("23505"), {}, None),  # unique violation: the store's keys, not the content
        (raising("23514"), {}, None),  # check violation: the schema's
        (raising("40001"), {}, None),  # serialization failure: transient
        (raising("40P01"), {}, None),  # deadlock
        (raising("55P03"), {}, None),  # lock not available (lock timeout)
        (raising("57P01"), {}, None),  # admin shutdown
        ("SELECT pg_sleep(1)", {"options": "-c statement_timeout=50"}, None),  # 57014
    ],
)
def test_only_the_content_s_refusals_are_blamed_on_messages(dsn, statement, options, expected):
    error = real_error(dsn, statement, **options)
    assert content_refusal(error) == expected
    try:
        raise StoreUnavailable(str(error)) from error  # as the pipeline gives it
    except StoreUnavailable as wrapped:
        assert content_refusal(wrapped) == expected


def test_text_the_driver_cannot_send_is_blamed_on_its_message(dsn):
    """NUL and a lone surrogate (a JSON ``\\udc00`` escape makes one) are refused by psycopg
    itself, before anything reaches the server."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        refused = []
        for text in ("a\x00b", "\udc00"):
            with pytest.raises((psycopg.DataError, UnicodeEncodeError)) as caught:
                conn.execute("SELECT %s::text", (text,))
            refused.append(content_refusal(caught.value))
    assert refused == ["client", "client"]


def test_a_lost_session_is_not_blamed_on_messages(dsn):
    with (
        psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn,
        psycopg.connect(dsn, autocommit=True, connect_timeout=5) as admin,
    ):
        admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        with pytest.raises(psycopg.OperationalError) as lost:
            conn.execute("SELECT 1")
    assert content_refusal(lost.value) is None


# One database for all examples, truncated before each: hypothesis reuses the fixture.
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(poison=st.lists(st.booleans(), min_size=1, max_size=24))
def test_any_mix_of_poison_stores_each_good_reading_once_in_order(cluster, poison):
    c = cluster
    c.sql("TRUNCATE readings, dead_letters, rejection_totals, state, alert_log")
    narrow_seq(c)  # idempotent
    c.replica._drop_worker(0)  # a fresh partition: its state was truncated
    c.replica.counters.clear()
    batch = [c.bin(POISON_SEQ + i if bad else i) for i, bad in enumerate(poison)]
    c.replica._batch(batch)

    assert c.readings() == good(batch)
    assert [d[1:3] for d in c.dead_letters()] == [("store_refused", REFUSED_22003)] * sum(poison)
    assert c.replica.counters["store_refused"] == sum(poison)
    c.replica._batch(batch)  # its ack lost: nothing changes
    assert c.readings() == good(batch)
    assert len(c.dead_letters()) == sum(poison)


def test_a_unique_violation_on_the_store_s_own_key_waits_for_the_store(cluster):
    """``alert_log``'s id sequence behind its rows (a restore): the alert of an open lid
    collides with an id already taken (SQLSTATE 23505). That is the store's fault, not the
    reading's: nothing is dead-lettered, the batch comes again until the sequence is set
    right, then it commits whole and its alert goes to the log."""
    c = cluster
    c.sql("INSERT INTO alert_log (lease, body, created_ms) SELECT 0, '{}', 0"
          " FROM generate_series(1, 999)")  # fmt: skip
    c.sql("SELECT setval('alert_log_id_seq', 1)")
    batch = [c.bin(1), c.cover(2), c.cover(3, lid_open=True), c.bin(4)]
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            c.replica._batch(batch)
    assert (c.readings(), c.dead_letters()) == ([], [])
    assert c.replica.counters["batch_refused_StoreUnavailable"] == 2
    assert "store_refused" not in c.replica.counters

    c.sql("SELECT setval('alert_log_id_seq', (SELECT max(id) FROM alert_log))")
    c.replica._batch(batch)
    assert c.readings() == good(batch)
    assert c.dead_letters() == []
    logged = c.sql("SELECT body FROM alert_log WHERE id > 999")
    assert [json.loads(body)["key"] for (body,) in logged] == ["MH-001/cover_anomaly"]


SEARCH_BUDGET_S = 1.5 / 3
# Past the budget: the step under way when it ran out (a commit of readings, 0.1 s here,
# and a rebuild of the worker).
STEP_MARGIN_S = 0.4


def test_a_search_out_of_time_gives_the_loop_back_and_comes_again(short_lease):
    """Every commit of readings takes 0.1 s (a statement trigger sleeps), so the search of
    a delivery with 8 poison messages among 16 outlasts its time: the callback gives the
    loop back within it and raises ``ComeAgain``; each delivery that comes again goes on
    from what committed, on the same session, until the batch is done, with every reading
    stored once and every poison message dead-lettered once."""
    c = short_lease
    narrow_seq(c)
    c.sql(
        "CREATE FUNCTION slow_store() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM pg_sleep(0.1); RETURN NULL; END $$"
    )
    c.sql("CREATE TRIGGER slow_store BEFORE INSERT ON readings FOR EACH STATEMENT"
          " EXECUTE FUNCTION slow_store()")  # fmt: skip
    batch = [c.bin(POISON_SEQ + seq if seq % 2 else seq) for seq in range(16)]
    session = c.replica._worker(0).conn.raw.info.backend_pid
    came_again, done = 0, []
    while True:
        assert 0 in c.replica.keeper.tick()  # renewed: the fence the partition was read with
        started = time.monotonic()
        try:
            c.replica._batch(batch)
        except ComeAgain:
            assert time.monotonic() - started < SEARCH_BUDGET_S + STEP_MARGIN_S
            came_again += 1
            done.append(len(c.readings()) + len(c.dead_letters()))
            assert came_again < 16, done
            continue
        break

    assert came_again >= 1
    assert done == sorted(set(done)), done  # each delivery went on from the last
    assert c.readings() == good(batch)
    assert [d[1:3] for d in c.dead_letters()] == [("store_refused", REFUSED_22003)] * 8
    counters = c.replica.counters
    assert (counters["store_refused"], counters["batches"], counters["messages"]) == (8, 1, 16)
    assert counters["batch_refused_ComeAgain"] == came_again
    assert [k for k in counters if k.startswith("batch_refused_")] == ["batch_refused_ComeAgain"]
    assert c.replica.workers[0].conn.raw.info.backend_pid == session
