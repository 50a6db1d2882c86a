"""Partition leases with fencing tokens, in PostgreSQL: which replica processes which partition.

Ingest is split into N partitions (every device hashes to one); a replica processes a
partition only while it holds the partition's lease. A lease is a row of
``partition_leases``: its owner, its fence and its expiry. Every expiry is judged by the
database's clock alone, so replicas' clocks may disagree freely; by ``clock_timestamp()``,
not ``now()``, which stays at the start of a transaction: a write transaction opened before
a pause would judge its lease by the time before the pause.

Why fencing and not the lease alone: a replica paused (GC, SIGSTOP, a stalled VM) past its
lease wakes up believing it still holds it. Every takeover therefore increments the
partition's fence, and every write of a holder goes through :func:`fenced` inside the
write's own transaction: it locks the lease row ``FOR SHARE`` and refuses unless the row
still names this owner, this fence and an unexpired lease. The lock is held until the write
commits, so a takeover (an ``UPDATE`` of that row) waits for the write to end: a committed
write always happened under the current fence, and the whole transaction of a stale holder
rolls back. The waiting is bounded: the sessions opened by :func:`connect` end a
transaction left idle for ``idle_in_transaction_ms`` (a paused replica's), which releases
its lock, and a takeover that cannot get the row within ``lock_timeout_ms`` is refused as
"busy" and tried again at the next tick.

Hand-over without waiting for expiry: live replicas announce themselves with a heartbeat
row in ``replicas``; :func:`balance` deals the partitions round-robin over the sorted live
ids, so every replica computes the same plan. On each :meth:`LeaseKeeper.tick` a replica
releases the partitions the plan gave to others (after its last write for them committed,
because the caller ticks between batches), renews the ones it keeps and acquires the ones
it was given, which succeeds as soon as the old holder has released (or its lease expired,
when it died). The messages of a partition wait in its durable consumer meanwhile, so the
gap loses nothing. Owner ids must be unique per process (a restarted replica takes a new
one, or its first acquire renews the lease of its dead predecessor with the old fence).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

log = logging.getLogger(__name__)

MAX_PARTITIONS = 4096
MIN_TTL_S, MAX_TTL_S = 0.1, 3600.0
OWNER_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
# Serialises the creation of the tables by replicas starting at the same moment
# (CREATE TABLE IF NOT EXISTS alone can still collide on the catalog's unique index).
SCHEMA_LOCK_KEY = 0x63677731

SCHEMA = """
CREATE TABLE IF NOT EXISTS partition_leases (
    partition int PRIMARY KEY,
    owner text,
    fence bigint NOT NULL,
    expires_at timestamptz
);
CREATE TABLE IF NOT EXISTS replicas (
    replica text PRIMARY KEY,
    expires_at timestamptz NOT NULL
)
"""


class StaleLease(Exception):
    """The caller's lease moved on or expired: its whole write transaction must roll back."""


class LeaseDatabaseError(RuntimeError):
    """PostgreSQL could not be reached or refused the session; the message holds no secret."""


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def connect(
    dsn: str,
    *,
    connect_timeout_s: int = 5,
    statement_timeout_ms: int = 5000,
    lock_timeout_ms: int = 1000,
    idle_in_transaction_ms: int = 5000,
) -> psycopg.Connection:
    """An autocommit session whose every wait is bounded (see the module docstring).

    ``idle_in_transaction_ms`` should be shorter than the lease TTL: it is how long a paused
    holder's open write transaction can delay the takeover of its partition."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        raise LeaseDatabaseError("the PostgreSQL DSN does not parse") from None
    secret = params.get("password")
    where = f"{params.get('host', 'local socket')}:{params.get('port', 5432)}"
    options = (
        f"-c statement_timeout={int(statement_timeout_ms)} -c lock_timeout={int(lock_timeout_ms)}"
        f" -c idle_in_transaction_session_timeout={int(idle_in_transaction_ms)}"
    )
    try:
        return psycopg.connect(
            dsn, autocommit=True, connect_timeout=connect_timeout_s, options=options
        )
    except psycopg.Error as exc:
        reason = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", secret)
        raise LeaseDatabaseError(f"cannot connect to PostgreSQL at {where}: {reason}") from None


def _check_owner(owner: str) -> str:
    if not isinstance(owner, str) or not OWNER_PATTERN.fullmatch(owner):
        raise ValueError("owner must be 1-128 characters of letters, digits and ._:@-")
    return owner


def _check_ttl(ttl_s: float) -> float:
    if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s must lie in [{MIN_TTL_S}, {MAX_TTL_S}], got {ttl_s}")
    return float(ttl_s)


def balance(owner: str, replicas_alive: list[str] | set[str], partitions: int) -> list[int]:
    """The partitions ``owner`` should hold: dealt round-robin over the sorted live ids.

    Deterministic, so every replica computes the same plan from the same heartbeats, and
    even (counts differ by at most one). A replica not among the live holds nothing."""
    alive = sorted(set(replicas_alive))
    if owner not in alive:
        return []
    return list(range(alive.index(owner), partitions, len(alive)))


def fenced(conn: psycopg.Connection, owner: str, partition: int, fence: int) -> None:
    """Call inside the write's transaction: raises :class:`StaleLease` unless ``owner``
    holds ``partition`` with ``fence`` on an unexpired lease, and holds the row's lock until
    that transaction ends, so no takeover can come between this check and the commit."""
    row = conn.execute(
        "SELECT owner, fence, expires_at > clock_timestamp() FROM partition_leases"
        " WHERE partition = %s FOR SHARE",
        (partition,),
    ).fetchone()
    if conn.info.transaction_status != TransactionStatus.INTRANS:
        raise RuntimeError("fenced() must run inside the caller's write transaction")
    if row is None:
        raise StaleLease(f"partition {partition} has no lease row")
    holder, current, fresh = row
    if current != fence:
        raise StaleLease(f"partition {partition}: fence {fence} moved on to {current}")
    if holder != owner:
        raise StaleLease(f"partition {partition}: lease released or held by another replica")
    if not fresh:
        raise StaleLease(f"partition {partition}: lease of fence {fence} expired")


class LeaseTable:
    """The lease and heartbeat operations, each one short transaction on ``conn``.

    One instance per session and thread (a psycopg connection runs one transaction at a
    time). Refusals are counted by reason in ``refused``."""

    def __init__(self, conn: psycopg.Connection, partitions: int) -> None:
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise ValueError(f"partitions must lie in [1, {MAX_PARTITIONS}], got {partitions}")
        self.conn = conn
        self.partitions = partitions
        self.refused: Counter[str] = Counter()

    def _check_partition(self, partition: int) -> int:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition must lie in [0, {self.partitions}), got {partition}")
        return partition

    def ensure_schema(self) -> None:
        """Creates the tables and rows 0..N-1 once; refuses a table made for another N,
        since changing N moves devices between partitions under running holders."""
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            for statement in SCHEMA.split(";"):
                self.conn.execute(statement)
            (count,) = self.conn.execute("SELECT count(*) FROM partition_leases").fetchone()
            if count == 0:
                self.conn.execute(
                    "INSERT INTO partition_leases (partition, fence)"
                    " SELECT p, 0 FROM generate_series(0, %s - 1) AS p",
                    (self.partitions,),
                )
            elif count != self.partitions:
                raise RuntimeError(
                    f"partition_leases holds {count} partitions, this replica is set for "
                    f"{self.partitions}: the partition count changes only with every replica"
                    " stopped and the table emptied"
                )

    def _update(
        self, refusal: str, owner: str, partition: int, sql: str, params: dict
    ) -> int | None:
        """One lease ``UPDATE ... RETURNING fence`` in its own transaction; the fence, or
        None counted as ``refusal`` (no row matched) or as busy (the row stayed locked by a
        write past ``lock_timeout``)."""
        _check_owner(owner)
        self._check_partition(partition)
        try:
            with self.conn.transaction():
                row = self.conn.execute(
                    sql, {**params, "owner": owner, "partition": partition}
                ).fetchone()
        except pg_errors.LockNotAvailable:
            self.refused[refusal.split("_")[0] + "_busy"] += 1
            return None
        if row is None:
            self.refused[refusal] += 1
            return None
        return row[0]

    def acquire(self, owner: str, partition: int, ttl_s: float) -> int | None:
        """Takes a free or expired lease (fence + 1) or renews this owner's fresh one (same
        fence); returns the fence, or None when another owner's lease is fresh or busy."""
        return self._update(
            "acquire_held",
            owner,
            partition,
            "UPDATE partition_leases SET"
            " fence = CASE WHEN owner = %(owner)s AND expires_at > clock_timestamp()"
            "   THEN fence ELSE fence + 1 END,"
            " owner = %(owner)s,"
            " expires_at = clock_timestamp() + make_interval(secs => %(ttl)s)"
            " WHERE partition = %(partition)s AND (owner IS NULL OR owner = %(owner)s"
            "   OR expires_at IS NULL OR expires_at <= clock_timestamp())"
            " RETURNING fence",
            {"ttl": _check_ttl(ttl_s)},
        )

    def renew(self, owner: str, partition: int, fence: int, ttl_s: float) -> bool:
        """Extends a lease only with its current fence and before it expired: a lease that
        lapsed is acquired again, with a new fence, since others may have been refused."""
        return (
            self._update(
                "renew_stale",
                owner,
                partition,
                "UPDATE partition_leases"
                " SET expires_at = clock_timestamp() + make_interval(secs => %(ttl)s)"
                " WHERE partition = %(partition)s AND owner = %(owner)s AND fence = %(fence)s"
                " AND expires_at > clock_timestamp() RETURNING fence",
                {"ttl": _check_ttl(ttl_s), "fence": fence},
            )
            is not None
        )

    def release(self, owner: str, partition: int, fence: int) -> bool:
        """Frees the lease for an immediate takeover; the fence stays, the next acquire
        increments it. False when the lease had already moved on."""
        return (
            self._update(
                "release_stale",
                owner,
                partition,
                "UPDATE partition_leases SET owner = NULL, expires_at = NULL"
                " WHERE partition = %(partition)s AND owner = %(owner)s AND fence = %(fence)s"
                " RETURNING fence",
                {"fence": fence},
            )
            is not None
        )

    def heartbeat(self, owner: str, ttl_s: float) -> None:
        """Announces ``owner`` as live until the database's now + ``ttl_s``."""
        with self.conn.transaction():
            self.conn.execute(
                "INSERT INTO replicas (replica, expires_at)"
                " VALUES (%(owner)s, clock_timestamp() + make_interval(secs => %(ttl)s))"
                " ON CONFLICT (replica) DO UPDATE SET expires_at = EXCLUDED.expires_at",
                {"owner": _check_owner(owner), "ttl": _check_ttl(ttl_s)},
            )

    def leave(self, owner: str) -> None:
        """A replica shutting down stops counting as live at once (the others rebalance)."""
        with self.conn.transaction():
            self.conn.execute("DELETE FROM replicas WHERE replica = %s", (_check_owner(owner),))

    def live_replicas(self) -> list[str]:
        """Replicas whose heartbeat has not expired, by the database's clock; also removes
        heartbeats expired long ago (an hour), so the table does not grow with restarts."""
        with self.conn.transaction():
            self.conn.execute(
                "DELETE FROM replicas WHERE expires_at < clock_timestamp() - interval '1 hour'"
            )
            rows = self.conn.execute(
                "SELECT replica FROM replicas WHERE expires_at > clock_timestamp() ORDER BY replica"
            ).fetchall()
        return [replica for (replica,) in rows]

    def holders(self) -> dict[int, tuple[str | None, int, bool]]:
        """partition -> (owner, fence, fresh): for operators and tests."""
        rows = self.conn.execute(
            "SELECT partition, owner, fence, coalesce(expires_at > clock_timestamp(), false)"
            " FROM partition_leases ORDER BY partition"
        ).fetchall()
        return {p: (owner, fence, fresh) for p, owner, fence, fresh in rows}


@dataclass
class LeaseKeeper:
    """One replica's leases: heartbeat, plan, release what moved away, renew and acquire.

    ``tick`` runs every ttl/3 or so, between batches (never while a write of a partition it
    may release is open). ``held`` maps each partition held to its fence, for the writes."""

    table: LeaseTable
    owner: str
    ttl_s: float
    held: dict[int, int] = field(default_factory=dict)

    def tick(self) -> dict[int, int]:
        """Renewals come before acquisitions: an acquisition may wait up to the session's
        lock timeout on a row a paused holder still locks, and must not make this
        replica's own leases lapse meanwhile."""
        self.table.heartbeat(self.owner, self.ttl_s)
        plan = set(balance(self.owner, self.table.live_replicas(), self.table.partitions))
        for partition in sorted(set(self.held) - plan):
            self.table.release(self.owner, partition, self.held.pop(partition))
            log.info("partition %d released by %s for the rebalance", partition, self.owner)
        for partition, fence in sorted(self.held.items()):
            if not self.table.renew(self.owner, partition, fence, self.ttl_s):
                del self.held[partition]
        for partition in sorted(plan - set(self.held)):
            taken = self.table.acquire(self.owner, partition, self.ttl_s)
            if taken is not None:
                self.held[partition] = taken
                log.info("partition %d taken by %s with fence %d", partition, self.owner, taken)
        return dict(self.held)

    def stop(self) -> None:
        """Releases everything and leaves, so the others take over without waiting."""
        for partition, fence in sorted(self.held.items()):
            self.table.release(self.owner, partition, fence)
        self.held.clear()
        self.table.leave(self.owner)
