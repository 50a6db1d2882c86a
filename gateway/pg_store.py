"""The cluster's store: the embedded store's tables in PostgreSQL, behind an sqlite3-style face.

One rules and incidents code path serves both deployments (issue 14): the pipeline, the
store's batch commit, the outbox, silences, suspected duplicates and the closure check take
a connection and speak the small part of ``sqlite3`` they use (``execute``/``executemany``
with ``?`` or ``:name`` parameters, ``in_transaction``, ``with conn:``, a cursor's
``fetchone``/``fetchall``/``rowcount``/``lastrowid``/``description``). :class:`PgConnection`
gives psycopg 3 that face instead of teaching every module two dialects:

- The session is in autocommit, as the embedded store's is (``isolation_level=None``): a
  statement outside an explicit transaction commits alone, and the callers' own
  ``BEGIN IMMEDIATE``/``COMMIT``/``ROLLBACK`` open and end transactions. PostgreSQL has no
  ``IMMEDIATE``: its row locks are taken by the writes themselves, so it is dropped.
- Parameters are translated once per statement text (:func:`translate`, cached): ``?`` and
  ``?NNN`` and ``:name`` become psycopg's ``%s``/``%(name)s``, a literal ``%`` becomes ``%%``,
  and nothing inside a string literal, a quoted identifier or a comment is touched
  (``LIKE '%/health/offline'``, a ``'?'`` in a message, PostgreSQL's ``::`` casts).
- ``lastrowid`` after a single ``INSERT`` into a table keyed by an identity column is read
  with a ``RETURNING`` the facade adds (``AUTO_KEYS``): silences and the audit trail use it.
- ``with conn:`` commits an open transaction, or rolls it back on an exception, and never
  closes the connection, exactly as ``sqlite3.Connection`` does.

:func:`ensure_schema` creates the PostgreSQL equivalent of ``gateway.store.SCHEMA`` and
``case_bridge.outbox.SCHEMA``, derived from them (:func:`postgres_schema`: bigint for times
and ids, identity columns for AUTOINCREMENT), the triggers as plpgsql functions and
``json_extract(text, text)``, so
``store.load_open_incidents`` and the duplicates' queries run unchanged. ``readings`` and
``suspected_duplicates`` get a ``rowid`` identity column: the queries that order or page by
SQLite's implicit rowid read the same column here. It runs under a transaction-level
advisory lock, so replicas starting together do not collide on the catalog, and is
idempotent.

Connections are opened through ``gateway.cluster_leases.connect`` (every wait bounded:
statement, lock and idle-in-transaction timeouts; a failure to connect reported without the
password). A session the server lost is opened again between transactions, never inside one
(``PgConnection._session``): the pipeline keeps a batch whose commit failed and retries it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import lru_cache, partial
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus

from case_bridge import outbox
from gateway import cluster_leases, store

# Serialises ensure_schema across replicas (cluster_leases uses 0x63677731 for its own).
SCHEMA_LOCK_KEY = 0x63677732
MAX_STATEMENT_CHARS = 100_000  # our own statements are short; a bound for the translator cache

# Tables whose key is an identity column, for ``lastrowid`` (SQLite's AUTOINCREMENT keys).
AUTO_KEYS = {
    "dead_letters": "id",
    "alerts": "id",
    "silences": "id",
    "users": "id",
    "client_tokens": "id",
    "audit": "id",
    "outbox": "seq",
    "case_statuses": "seq",
}

_APPEND_ONLY = "the audit log is append-only"

# What PostgreSQL adds to the embedded schema: the triggers as plpgsql and json_extract.
_POSTGRES_ONLY = f"""
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION '{_APPEND_ONLY}'; END $$;
CREATE OR REPLACE TRIGGER audit_no_update BEFORE UPDATE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE OR REPLACE TRIGGER audit_no_delete BEFORE DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE OR REPLACE FUNCTION case_links_forget_statuses() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM case_links WHERE case_id = OLD.case_id) THEN
        DELETE FROM case_statuses WHERE case_id = OLD.case_id;
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER case_links_forget_statuses AFTER DELETE ON case_links
    FOR EACH ROW EXECUTE FUNCTION case_links_forget_statuses();
-- SQLite's json_extract for the paths the shared queries use ('$.a' and '$.a.b'): the
-- value as text (a JSON string unquoted), NULL when the path is absent.
CREATE OR REPLACE FUNCTION json_extract(doc text, path text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (doc::jsonb) #>> string_to_array(substr(path, 3), '.') $$
"""
# Tables whose queries order or page by SQLite's implicit rowid: here a column of that name.
_ROWID_TABLES = {
    "readings": "rowid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "suspected_duplicates": "rowid bigint GENERATED ALWAYS AS IDENTITY UNIQUE",
}


def postgres_schema(sqlite_schema: str) -> str:
    """The embedded schema's DDL as PostgreSQL's, derived rather than written twice so the
    two cannot drift: INTEGER (times in ms, ids, counts) becomes bigint, REAL double
    precision, an AUTOINCREMENT key an identity column (by default, so an explicit id is
    taken as SQLite takes it), SQLite's triggers are left to ``_POSTGRES_ONLY``."""
    ddl = re.sub(r"CREATE TRIGGER IF NOT EXISTS .*? END;", "", sqlite_schema, flags=re.DOTALL)
    ddl = ddl.replace(
        "INTEGER PRIMARY KEY AUTOINCREMENT", "bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    )
    ddl = re.sub(r"\bINTEGER\b", "bigint", ddl)
    ddl = re.sub(r"\bREAL\b", "double precision", ddl)
    for table, column in _ROWID_TABLES.items():
        head = f"CREATE TABLE IF NOT EXISTS {table} ("
        if head not in ddl:
            raise ValueError(f"the embedded schema has no table {table}")
        ddl = ddl.replace(head, f"{head}\n    {column},")
    return ddl


SCHEMA = postgres_schema(store.SCHEMA + outbox.SCHEMA) + _POSTGRES_ONLY


class PgCursor:
    """The part of ``sqlite3.Cursor`` the shared modules read."""

    def __init__(
        self, cursor: psycopg.Cursor, lastrowid: int | None = None, rows: bool = True
    ) -> None:
        self._cursor = cursor
        self.lastrowid = lastrowid
        # False after an INSERT whose added RETURNING was read: sqlite3 gives no rows there
        self._rows = rows and cursor.description is not None

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def description(self) -> Any:
        return self._cursor.description if self._rows else None

    def fetchone(self) -> tuple | None:
        return self._cursor.fetchone() if self._rows else None

    def fetchall(self) -> list[tuple]:
        return self._cursor.fetchall() if self._rows else []

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.fetchall())


class PgConnection:
    """An sqlite3-style connection over one autocommit psycopg session (module docstring).

    Like the embedded store's connection it runs one transaction at a time; ``raw`` is the
    psycopg connection, for ``cluster_leases.fenced`` inside the caller's transaction."""

    def __init__(
        self, raw: psycopg.Connection, reopen: Callable[[], psycopg.Connection] | None = None
    ) -> None:
        if not raw.autocommit:
            raise ValueError("PgConnection needs an autocommit session, as sqlite3's is here")
        self.raw = self._adopt(raw)
        # Opens a new session when the server lost ours (between transactions only).
        self.reopen = reopen
        self._in_tx = False  # what the session last reported, kept while it is lost
        self.reopened = 0

    @staticmethod
    def _adopt(raw: psycopg.Connection) -> psycopg.Connection:
        # Parameters are bound in the client, as literals: a server-side parameter has to
        # have a type PostgreSQL can infer, and the shared SQL holds ``? IS NULL`` checks
        # that SQLite types at run time (an outbox listing with no state filter).
        raw.cursor_factory = psycopg.ClientCursor
        return raw

    def _session(self) -> psycopg.Connection:
        """The live session. A lost one (the server restarted, or ended a session left idle
        in a transaction by a paused replica) is replaced, but only between transactions:
        the statements after a transaction's loss fail until the caller rolls back (as
        ``store.commit`` does), never run on their own on a new session."""
        if self.raw.broken and self.reopen is not None:
            if self._in_tx:
                raise psycopg.OperationalError(
                    "the PostgreSQL session was lost inside a transaction, which ended with it"
                )
            try:
                fresh = self.reopen()
            except cluster_leases.LeaseDatabaseError as exc:  # a store failure like any other
                raise psycopg.OperationalError(str(exc)) from None
            self.raw = self._adopt(fresh)
            self.reopened += 1
        return self.raw

    def _track(self) -> None:
        if not self.raw.broken:
            status = self.raw.info.transaction_status
            self._in_tx = status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)

    @property
    def in_transaction(self) -> bool:
        if self.raw.broken or self.raw.closed:
            self._in_tx = False  # the server ended the transaction with the session
            return False
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> PgCursor:
        query, spec = translate(sql)
        returning = spec.returning
        if returning is not None:
            query = f"{query} RETURNING {returning}"
        try:
            cursor = self._session().execute(query, _bind(spec, params, sql))
        finally:
            self._track()
        if returning is None:
            return PgCursor(cursor)
        rows = cursor.fetchall()
        return PgCursor(cursor, rows[-1][0] if rows else None, rows=False)

    def executemany(
        self, sql: str, seq_of_params: Iterable[Sequence[Any] | Mapping[str, Any]]
    ) -> PgCursor:
        query, spec = translate(sql)
        # Server-side binding here: psycopg pipelines the rows, twice the rate of
        # ClientCursor's (a batch's readings and states). The shared executemany statements
        # put every parameter where its column gives it a type (VALUES, SET, col = ?).
        rows = [_bind(spec, params, sql) for params in seq_of_params]
        cursor = psycopg.Cursor(self._session())
        try:
            if rows:
                cursor.executemany(query, rows)
        finally:
            self._track()
        return PgCursor(cursor)

    def commit(self) -> None:
        if self.in_transaction:
            self.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction:
            self.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> PgConnection:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        """As sqlite3: commit (or, on an exception, roll back) an open transaction; the
        connection stays open."""
        if exc_type is None:
            self.commit()
        else:
            self.rollback()


class Spec:
    """How a translated statement takes its parameters: ``count`` positional ones, or the
    ``names`` of named ones (``?NNN`` become ``p<NNN>``); ``returning``: the key an
    ``INSERT`` gives back for ``lastrowid``."""

    __slots__ = ("count", "names", "numbered", "returning")

    def __init__(self) -> None:
        self.count = 0
        self.names: list[str] = []
        self.numbered = False
        self.returning: str | None = None

    @property
    def has_params(self) -> bool:
        return bool(self.count or self.names)


# One token at a time: a string literal, a quoted identifier, a comment, a placeholder, a
# cast, a percent sign, or a run of anything else.
_TOKENS = re.compile(
    r"""
    (?P<literal>'(?:[^']|'')*'?)
  | (?P<ident>"(?:[^"]|"")*"?)
  | (?P<line>--[^\n]*)
  | (?P<block>/\*.*?(?:\*/|\Z))
  | \?(?P<number>[0-9]+)
  | (?P<qmark>\?)
  | (?P<cast>::)
  | :(?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<percent>%)
  | [^'"\-/?:%]+
  | .
    """,
    re.VERBOSE | re.DOTALL,
)
_INSERT_INTO = re.compile(r"\s*INSERT\s+INTO\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
_BEGIN_IMMEDIATE = re.compile(r"\s*BEGIN\s+(IMMEDIATE|DEFERRED|EXCLUSIVE)\s*;?\s*", re.IGNORECASE)


@lru_cache(maxsize=1024)
def translate(sql: str) -> tuple[str, Spec]:
    """An SQLite statement as psycopg takes it, and how to bind its parameters. Mixing
    positional and named parameters is refused, as sqlite3 refuses it."""
    if len(sql) > MAX_STATEMENT_CHARS:
        raise ValueError(f"statement of {len(sql)} characters, over {MAX_STATEMENT_CHARS}")
    if _BEGIN_IMMEDIATE.fullmatch(sql):
        return "BEGIN", Spec()
    spec = Spec()
    out: list[str] = []
    for match in _TOKENS.finditer(sql):
        kind = match.lastgroup
        if kind == "qmark":
            spec.count += 1
            out.append("%s")
        elif kind in ("number", "name"):
            name = f"p{int(match['number'])}" if kind == "number" else match["name"]
            spec.numbered = spec.numbered or kind == "number"
            if name not in spec.names:
                spec.names.append(name)
            out.append(f"%({name})s")
        elif kind == "percent":
            out.append("%%")
        else:  # psycopg reads a % anywhere, string literals included
            out.append(match[0].replace("%", "%%"))
    if spec.count and spec.names:
        raise psycopg.ProgrammingError("positional and named parameters in one statement")
    inserted = _INSERT_INTO.match(sql)
    if inserted and "RETURNING" not in sql.upper():
        spec.returning = AUTO_KEYS.get(inserted[1].lower())
    # Without parameters psycopg sends the text as it is: a %% would stay doubled.
    return ("".join(out) if spec.has_params else sql), spec


def _bind(spec: Spec, params: Sequence[Any] | Mapping[str, Any], sql: str) -> Any:
    """The parameters in psycopg's shape, checked against the statement as sqlite3 does."""
    if not spec.has_params:
        if params:
            raise psycopg.ProgrammingError("parameters given to a statement that takes none")
        return None
    if spec.count:
        if isinstance(params, Mapping) or len(params) != spec.count:
            raise psycopg.ProgrammingError(
                f"the statement takes {spec.count} parameters: {sql[:200]!r}"
            )
        return tuple(params)
    if spec.numbered:
        if isinstance(params, Mapping):
            raise psycopg.ProgrammingError("numbered parameters take a sequence")
        return {f"p{i}": value for i, value in enumerate(params, start=1)}
    if not isinstance(params, Mapping):
        raise psycopg.ProgrammingError("named parameters take a mapping")
    return params


def connect(
    dsn: str,
    password: str | None = None,
    *,
    connect_timeout_s: int = 5,
    statement_timeout_ms: int = 30_000,
    lock_timeout_ms: int = 5_000,
    idle_in_transaction_ms: int = 30_000,
) -> PgConnection:
    """A facade over a new autocommit session whose every wait is bounded. ``password``
    (from the config's secrets, never the DSN in a file) joins the DSN here; a failure to
    connect raises ``cluster_leases.LeaseDatabaseError`` without it."""
    if password is not None:
        dsn = make_conninfo(dsn, password=password)
    session = partial(
        cluster_leases.connect,
        dsn,
        connect_timeout_s=connect_timeout_s,
        statement_timeout_ms=statement_timeout_ms,
        lock_timeout_ms=lock_timeout_ms,
        idle_in_transaction_ms=idle_in_transaction_ms,
    )
    return PgConnection(session(), reopen=session)


def ensure_schema(conn: PgConnection) -> None:
    """Creates the tables, triggers and ``json_extract`` (idempotent), serialised across
    replicas by a transaction-level advisory lock."""
    raw = conn._session()
    with raw.transaction():
        raw.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        raw.execute(SCHEMA)
