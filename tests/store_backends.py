"""Both stores side by side: one test body run on a fresh embedded SQLite store and on a
fresh database of a real PostgreSQL server (simulators/postgres.py) checks that a code path
gives one result on both. A test module takes the fixtures by naming them at its top
(``server = store_backends.server``, ``conn = store_backends.conn``): tests/conftest.py
has a ``conn`` of its own, which the module's name overrides."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import pg_store, store
from simulators.postgres import PostgresServer

BACKENDS = ("sqlite", "postgres")
_databases = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server, one per test module."""
    with PostgresServer() as pg:
        yield pg


def pg_connection(server: PostgresServer) -> pg_store.PgConnection:
    """A new database on ``server``, schema made."""
    conn = pg_store.connect(server.create_database(f"store_{next(_databases)}"))
    pg_store.ensure_schema(conn)
    return conn


@pytest.fixture(params=BACKENDS)
def conn(request, server: PostgresServer, tmp_path: Path) -> Iterator[Any]:
    """A fresh store of either kind, schema made."""
    if request.param == "sqlite":
        made: Any = store.connect(tmp_path / "store.db")
    else:
        made = pg_connection(server)
    yield made
    made.close()
