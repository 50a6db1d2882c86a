"""Run a throwaway PostgreSQL on a loopback port, for the tests of the cluster's shared state
and for benchmarks (bench/cluster.py).

Debian's ``postgresql`` package (``make test`` installs it) puts ``initdb`` and ``pg_ctl`` in
``/usr/lib/postgresql/<version>/bin``, not on PATH. Both refuse to run as root, and CI runs
as root, so they run as the ``postgres`` user on a folder of ``/tmp`` that user owns (pytest's
own temp folders are 0700 and root's). Trust authentication is safe only because the server
listens on 127.0.0.1 alone and its Unix socket lies in that private folder. For tests, fsync
and the other durability settings are off: a test server's data need not survive a power
cut, and initdb plus start take about a second instead of several. A benchmark of commits
asks for ``durable=True``: PostgreSQL's defaults, every commit flushed to disk.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from simulators.mosquitto import free_port

POSTGRES_USER = "postgres"
FAST_UNSAFE_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def postgres_bin_dir() -> Path:
    """Debian's newest installed PostgreSQL, else whatever ``pg_ctl`` PATH finds."""
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    found = debian[-1] if debian else shutil.which("pg_ctl")
    if not found:
        raise RuntimeError("PostgreSQL is not installed: `make test` installs it with apt-get")
    return Path(found).parent


class PostgresServer:
    """initdb + pg_ctl start in a fresh folder; ``dsn(db)`` names a database on it.

    Use as a context manager (a module-scoped fixture): the server stops and its folder is
    removed on exit, also when the start failed half-way."""

    def __init__(self, start_timeout_s: float = 30.0, durable: bool = False) -> None:
        self.bin = postgres_bin_dir()
        self.start_timeout_s = start_timeout_s
        self.settings = () if durable else FAST_UNSAFE_SETTINGS
        self.port = 0
        self.dir: Path | None = None
        self.startup_s = self.initdb_s = 0.0

    @property
    def data(self) -> Path:
        assert self.dir is not None, "the server is not started"
        return self.dir / "data"

    @property
    def log(self) -> Path:
        assert self.dir is not None, "the server is not started"
        return self.dir / "server.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={POSTGRES_USER} dbname={dbname}"

    def _as_postgres(self, *args: str) -> subprocess.CompletedProcess:
        run_as = [] if os.geteuid() != 0 else ["runuser", "-u", POSTGRES_USER, "--"]
        done = subprocess.run(
            [*run_as, *args],
            capture_output=True,
            text=True,
            timeout=self.start_timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
            )
        return done

    def start(self) -> None:
        """Returns once ``pg_ctl -w`` saw the server accept connections and a query answered."""
        started = time.monotonic()
        self.dir = Path(tempfile.mkdtemp(prefix="citygw-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam(POSTGRES_USER)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self._as_postgres(
            str(self.bin / "initdb"),
            "--pgdata",
            str(self.data),
            "--auth",
            "trust",
            "--username",
            POSTGRES_USER,
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
            "--no-instructions",
        )
        self.initdb_s = time.monotonic() - started
        for attempt in range(3):
            try:
                self._pg_ctl_start()
                break
            except RuntimeError:
                # Another process may take the free port between free_port() and the bind.
                taken = self.log.exists() and "already in use" in self.log.read_text()
                if not taken or attempt == 2:
                    raise
        with psycopg.connect(self.dsn(), connect_timeout=5) as conn:
            conn.execute("SELECT 1")
        self.startup_s = time.monotonic() - started

    def _pg_ctl_start(self) -> None:
        """pg_ctl --wait returns once the server accepts connections, or fails if it exited."""
        self.port = free_port()
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-p {self.port}",
                f"-c unix_socket_directories={self.dir}",
                *(f"-c {setting}" for setting in self.settings),
            ]
        )
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "start",
            "--wait",
            "--timeout",
            str(int(self.start_timeout_s)),
            "--pgdata",
            str(self.data),
            "--log",
            str(self.log),
            "--options",
            options,
        )

    def create_database(self, name: str) -> str:
        """A fresh, empty database for one test or module; returns its DSN."""
        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        """Fast shutdown (open sessions are ended), then the folder goes."""
        if self.dir is None:
            return
        try:
            if (self.data / "postmaster.pid").exists():
                self._as_postgres(
                    str(self.bin / "pg_ctl"),
                    "stop",
                    "--wait",
                    "--mode",
                    "fast",
                    "--pgdata",
                    str(self.data),
                )
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
