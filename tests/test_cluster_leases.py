"""Partition leases and fencing against a real PostgreSQL (simulators/postgres.py).

Time is advanced by moving ``expires_at`` into the past in the tables, never by sleeping;
the only waits are for the server to end a paused replica's idle transaction, observed.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from gateway.cluster_leases import (
    LeaseDatabaseError,
    LeaseKeeper,
    LeaseTable,
    StaleLease,
    balance,
    connect,
    fenced,
)
from simulators.mosquitto import free_port
from simulators.postgres import PostgresServer

TTL_S = 30.0
WRITES = "CREATE TABLE writes (owner text NOT NULL, partition int NOT NULL, fence bigint NOT NULL)"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with PostgresServer() as pg:
        yield pg


_databases = itertools.count()


@pytest.fixture
def dsn(server: PostgresServer) -> Iterator[str]:
    """A fresh database per test, with the tables of 8 partitions and a ``writes`` table."""
    db_dsn = server.create_database(f"leases_{next(_databases)}")
    with connect(db_dsn) as conn:
        LeaseTable(conn, 8).ensure_schema()
        conn.execute(WRITES)
    yield db_dsn


@pytest.fixture
def conns(dsn: str) -> Iterator[list[psycopg.Connection]]:
    """``conns`` holds the sessions a test opened with ``open_conn``; all are closed after."""
    opened: list[psycopg.Connection] = []
    yield opened
    for conn in opened:
        conn.close()


@pytest.fixture
def table(dsn: str, conns: list[psycopg.Connection]) -> LeaseTable:
    conn = connect(dsn)
    conns.append(conn)
    return LeaseTable(conn, 8)


def expire(conn: psycopg.Connection, partition: int | None = None) -> None:
    """Moves leases (one, or all) past their expiry, as the passing of the TTL would."""
    conn.execute(
        "UPDATE partition_leases SET expires_at = clock_timestamp() - interval '1 second'"
        " WHERE expires_at IS NOT NULL AND (%(p)s::int IS NULL OR partition = %(p)s)",
        {"p": partition},
    )


def write(conn: psycopg.Connection, owner: str, partition: int, fence: int) -> bool:
    """One fenced write of a row; False when the lease refused it (rolled back)."""
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO writes VALUES (%s, %s, %s)",
                (owner, partition, fence),
            )
            fenced(conn, owner, partition, fence)
    except StaleLease:
        return False
    return True


def count_writes(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM writes").fetchone()[0]


def test_acquire_renew_release(table: LeaseTable) -> None:
    assert table.acquire("a", 0, TTL_S) == 1
    assert table.acquire("a", 0, TTL_S) == 1  # its own fresh lease: renewed, same fence
    assert table.acquire("b", 0, TTL_S) is None
    assert table.renew("a", 0, 1, TTL_S) is True
    assert table.renew("a", 0, 2, TTL_S) is False  # not the current fence
    assert table.renew("b", 0, 1, TTL_S) is False
    assert table.release("b", 0, 1) is False
    assert table.release("a", 0, 1) is True
    assert table.holders()[0] == (None, 1, False)
    assert table.renew("a", 0, 1, TTL_S) is False  # released: acquire again
    assert table.acquire("b", 0, TTL_S) == 2
    assert table.refused == {
        "acquire_held": 1,
        "renew_stale": 3,
        "release_stale": 1,
    }


def test_expiry_takeover_increments_fence_and_refuses_the_old_holder(
    table: LeaseTable,
) -> None:
    conn = table.conn
    assert table.acquire("a", 3, TTL_S) == 1
    assert write(conn, "a", 3, 1) is True
    expire(conn, 3)
    assert write(conn, "a", 3, 1) is False  # expired, even before anyone took it over
    assert table.acquire("b", 3, TTL_S) == 2
    assert table.renew("a", 3, 1, TTL_S) is False
    assert write(conn, "a", 3, 1) is False
    assert write(conn, "b", 3, 2) is True
    assert write(conn, "b", 3, 1) is False
    assert write(conn, "b", 3, 3) is False  # a fence from the future is no fence
    assert count_writes(conn) == 2
    # Its own expired lease taken again still gets a new fence: writes of before are stale.
    expire(conn, 3)
    assert table.acquire("b", 3, TTL_S) == 3
    assert write(conn, "b", 3, 2) is False
    assert count_writes(conn) == 2
    assert table.holders()[3] == ("b", 3, True)


def test_fenced_needs_the_callers_transaction(table: LeaseTable) -> None:
    fence = table.acquire("a", 0, TTL_S)
    with pytest.raises(RuntimeError, match="inside the caller's write transaction"):
        fenced(table.conn, "a", 0, fence)


def test_two_replicas_racing_each_partition_has_one_winner(
    dsn: str, conns: list[psycopg.Connection]
) -> None:
    tables = [LeaseTable(connect(dsn), 8) for _ in range(2)]
    conns.extend(t.conn for t in tables)
    for round_ in range(5):
        start = threading.Barrier(2)
        won: dict[str, dict[int, int | None]] = {}
        threads = [
            threading.Thread(target=race, args=(start, won, "r1", tables[0], list(range(8)))),
            threading.Thread(target=race, args=(start, won, "r2", tables[1], [*range(7, -1, -1)])),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        for p in range(8):
            fences = [won["r1"][p], won["r2"][p]]
            assert sum(f is not None for f in fences) == 1, (round_, p, fences)
            assert [f for f in fences if f is not None] == [round_ + 1]
        expire(tables[0].conn)


def race(
    start: threading.Barrier,
    won: dict[str, dict[int, int | None]],
    name: str,
    table: LeaseTable,
    order: list[int],
) -> None:
    """One replica of the race: creates the tables (as replicas starting together do),
    waits for the other, then tries every partition in ``order``."""
    table.ensure_schema()
    start.wait(5)
    won[name] = {p: table.acquire(name, p, TTL_S) for p in order}


def holdings(keepers: list[LeaseKeeper]) -> dict[int, str]:
    """partition -> the one live keeper that holds it; fails on a partition held twice."""
    held: dict[int, str] = {}
    for keeper in keepers:
        for partition in keeper.held:
            assert partition not in held, (partition, held[partition], keeper.owner)
            held[partition] = keeper.owner
    return held


def test_balance_is_even_and_deterministic() -> None:
    assert balance("a", ["a"], 8) == list(range(8))
    assert balance("b", ["c", "b", "a"], 8) == [1, 4, 7]
    assert balance("c", {"a", "b", "c"}, 8) == [2, 5]
    assert balance("x", ["a", "b"], 8) == []
    shares = [len(balance(r, ["r1", "r2", "r3"], 100)) for r in ["r1", "r2", "r3"]]
    assert shares == [34, 33, 33]


def test_replicas_join_and_leave_hand_over_every_partition(
    dsn: str, conns: list[psycopg.Connection]
) -> None:
    def keeper(owner: str) -> LeaseKeeper:
        conn = connect(dsn)
        conns.append(conn)
        return LeaseKeeper(LeaseTable(conn, 8), owner, TTL_S)

    a = keeper("r-a")
    assert a.tick() == {p: 1 for p in range(8)}

    b = keeper("r-b")
    assert b.tick() == {}  # a still holds its fresh leases: no double holding
    a.tick()  # a sees b, releases b's share
    assert sorted(a.held) == [0, 2, 4, 6]
    assert b.tick() == {1: 2, 3: 2, 5: 2, 7: 2}  # taken at once, each with fence + 1
    assert holdings([a, b]) == {p: ("r-a", "r-b")[p % 2] for p in range(8)}

    c = keeper("r-c")
    for replica in (c, a, b, c, a):  # each releases before the next can acquire
        replica.tick()
    assert holdings([a, b, c]) == {p: ("r-a", "r-b", "r-c")[p % 3] for p in range(8)}
    assert {p: f for p, (_, f, _) in a.table.holders().items()} == {
        0: 1, 1: 2, 2: 2, 3: 3, 4: 2, 5: 3, 6: 1, 7: 2,
    }  # fmt: skip

    # b dies: its heartbeat and leases lapse (moved into the past), a and c share its part.
    a.table.conn.execute(
        "UPDATE replicas SET expires_at = clock_timestamp() - interval '1 s' WHERE replica = 'r-b'"
    )
    for partition in b.held:
        expire(a.table.conn, partition)
    for replica in (a, c, a):
        replica.tick()
    assert a.table.live_replicas() == ["r-a", "r-c"]
    assert holdings([a, c]) == {p: ("r-a", "r-c")[p % 2] for p in range(8)}

    # c leaves cleanly: it releases, a takes everything without waiting for an expiry.
    c.stop()
    a.tick()
    assert holdings([a]) == {p: "r-a" for p in range(8)}
    assert all(owner == "r-a" and fresh for owner, _, fresh in a.table.holders().values())


CHILD = """
import sys, psycopg
from gateway.cluster_leases import LeaseTable, StaleLease, connect, fenced
dsn, pause = sys.argv[1], sys.argv[2]
conn = connect(dsn, idle_in_transaction_ms=200)
fence = LeaseTable(conn, 8).acquire("paused", 0, 30.0)
print(fence, flush=True)
try:
    if pause == "before":
        sys.stdin.readline()
    with conn.transaction():
        fenced(conn, "paused", 0, fence)
        if pause == "inside":
            print("checked", flush=True)
            sys.stdin.readline()
        conn.execute("INSERT INTO writes VALUES ('paused', 0, %s)", (fence,))
    print("committed", flush=True)
except StaleLease:
    print("stale lease", flush=True)
except psycopg.Error as exc:  # the server ended the idle transaction's session
    print("session ended:", type(exc).__name__, flush=True)
"""


@pytest.mark.parametrize(
    ("pause", "outcome"),
    [("before", "stale lease"), ("inside", "session ended: IdleInTransactionSessionTimeout")],
)
def test_replica_paused_past_its_lease_cannot_write(
    pause: str, outcome: str, dsn: str, table: LeaseTable
) -> None:
    """SIGSTOP a replica holding partition 0, before or inside its write transaction; its
    lease lapses, another takes it over; SIGCONT: its write is refused and rolled back."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, dsn, pause],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert child.stdout.readline().strip() == "1"
        if pause == "inside":
            assert child.stdout.readline().strip() == "checked"
        child.send_signal(signal.SIGSTOP)
        # Inside, the paused transaction holds the row's lock: this waits until the server
        # ends its idle transaction (200 ms), observed by the UPDATE returning.
        expire(table.conn, 0)
        assert table.acquire("successor", 0, TTL_S) == 2
        assert write(table.conn, "successor", 0, 2) is True
        child.send_signal(signal.SIGCONT)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == outcome
        assert child.wait(10) == 0
    finally:
        child.kill()
        child.wait(10)
    rows = table.conn.execute("SELECT owner, fence FROM writes").fetchall()
    assert rows == [("successor", 2)]


def test_connect_errors_name_no_password() -> None:
    port = free_port()
    with pytest.raises(LeaseDatabaseError, match=f"127.0.0.1:{port}") as refused:
        connect(f"host=127.0.0.1 port={port} user=gw password=hunter2-secret", connect_timeout_s=2)
    assert "hunter2" not in str(refused.value)
    with pytest.raises(LeaseDatabaseError, match="does not parse") as bad:
        connect("host=127.0.0.1 password='hunter2-secret")
    assert "hunter2" not in str(bad.value)


def test_bounds_are_refused_with_clear_errors(table: LeaseTable) -> None:
    with pytest.raises(ValueError, match="partition must lie in"):
        table.acquire("a", 8, TTL_S)
    with pytest.raises(ValueError, match="ttl_s must lie in"):
        table.acquire("a", 0, 0.0)
    with pytest.raises(ValueError, match="owner must be"):
        table.acquire("a b'; --", 0, TTL_S)
    with pytest.raises(ValueError, match="partitions must lie in"):
        LeaseTable(table.conn, 0)
    with pytest.raises(RuntimeError, match="holds 8 partitions, this replica is set for 4"):
        LeaseTable(table.conn, 4).ensure_schema()
    assert table.holders()[0] == (None, 0, False)


OWNERS = ("o1", "o2", "o3")
PARTITIONS = 2


def test_random_interleavings_keep_one_holder_growing_fences_and_fenced_writes(
    table: LeaseTable,
) -> None:
    """Random acquire/renew/release/expiry/write sequences against a model of the spec."""
    conn = table.conn

    class Leases(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            conn.execute("UPDATE partition_leases SET owner = NULL, fence = 0, expires_at = NULL")
            conn.execute("TRUNCATE writes")
            # The model: partition -> [owner, fence, fresh]; what each owner believes.
            self.model = {p: [None, 0, False] for p in range(PARTITIONS)}
            self.believed: dict[tuple[str, int], int] = {}
            self.writes = 0
            self.highest = dict.fromkeys(range(PARTITIONS), 0)

        def current(self, owner: str, partition: int, fence: int) -> bool:
            holder, current, fresh = self.model[partition]
            return holder == owner and current == fence and fresh

        @rule(owner=st.sampled_from(OWNERS), partition=st.integers(0, PARTITIONS - 1))
        def acquire(self, owner: str, partition: int) -> None:
            holder, fence, fresh = self.model[partition]
            if fresh and holder != owner:
                expected = None
            else:
                expected = fence if fresh else fence + 1
                self.model[partition] = [owner, expected, True]
                self.believed[owner, partition] = expected
            assert table.acquire(owner, partition, TTL_S) == expected

        @rule(owner=st.sampled_from(OWNERS), partition=st.integers(0, PARTITIONS - 1))
        def renew(self, owner: str, partition: int) -> None:
            fence = self.believed.get((owner, partition), 0)
            expected = self.current(owner, partition, fence)
            assert table.renew(owner, partition, fence, TTL_S) is expected

        @rule(owner=st.sampled_from(OWNERS), partition=st.integers(0, PARTITIONS - 1))
        def release(self, owner: str, partition: int) -> None:
            fence = self.believed.get((owner, partition), 0)
            holder, current, _ = self.model[partition]
            expected = holder == owner and current == fence
            if expected:
                self.model[partition] = [None, current, False]
            assert table.release(owner, partition, fence) is expected

        @rule(partition=st.integers(0, PARTITIONS - 1))
        def time_passes(self, partition: int) -> None:
            expire(conn, partition)
            self.model[partition][2] = False

        @rule(
            owner=st.sampled_from(OWNERS),
            partition=st.integers(0, PARTITIONS - 1),
            forged=st.sampled_from([0, 0, 1, -1]),
        )
        def write(self, owner: str, partition: int, forged: int) -> None:
            fence = self.believed.get((owner, partition), 0) + forged
            expected = self.current(owner, partition, fence)
            assert write(conn, owner, partition, fence) is expected
            self.writes += expected

        @invariant()
        def table_matches_the_model(self) -> None:
            held = table.holders()
            for p in range(PARTITIONS):
                owner, fence, fresh = held[p]
                assert [owner, fence, fresh] == self.model[p]
                assert fence >= self.highest[p]  # fences only grow
                self.highest[p] = fence
                # At most one owner whose believed fence would be accepted now.
                accepted = [o for o in OWNERS if self.current(o, p, self.believed.get((o, p), 0))]
                assert len(accepted) <= 1
            assert count_writes(conn) == self.writes

    run_state_machine_as_test(
        Leases, settings=settings(max_examples=50, stateful_step_count=25, deadline=None)
    )
