"""A replica container's healthcheck (docker-compose.cluster.yml): healthy while the replica
running in this container announces itself live in the shared store.

A replica serves no HTTP. What shows it works is its lease tick: every ``lease_tick_s`` it
writes its heartbeat (``replicas.expires_at`` = now + ``lease_ttl_s``) in PostgreSQL, on
the same event loop as all its writes, so a replica that hangs, lost the database or
stopped ticking goes stale within a lease. Without a configured ``replica_id`` a replica
names itself ``<host name>-<8 hex>`` (gateway/cluster_settings.py), and a container's host
name is its own: the check looks for a fresh heartbeat under that name.

Usage: python deploy/replica_healthcheck.py CONFIG  (exit 0 healthy, 1 not; one line why)
"""

from __future__ import annotations

import sys

import psycopg
from psycopg.conninfo import make_conninfo

from gateway.config import ConfigError, load_config

# The random suffix a replica adds to its host name when no replica_id is configured.
_SUFFIX_CHARS = len("-0123abcd")

_FRESH = (
    "SELECT count(*) FROM replicas WHERE expires_at > clock_timestamp()"
    " AND (replica = %(name)s OR (left(replica, %(prefix_chars)s) = %(prefix)s"
    " AND length(replica) = %(prefix_chars)s + 8 AND %(by_host)s))"
)


def check(config_path: str) -> str | None:
    """None when healthy, else why not (never a secret: psycopg's errors are not quoted)."""
    try:
        settings = load_config(config_path).cluster
    except ConfigError as exc:
        return str(exc)
    if settings is None:
        return "the config has no cluster section"
    name = settings.owner()  # the configured id, or this host's name with a random suffix
    by_host = settings.replica_id is None
    prefix = name[:-_SUFFIX_CHARS] + "-" if by_host else name
    password = settings.postgres_password
    dsn = settings.postgres_dsn
    if password is not None:
        dsn = make_conninfo(dsn, password=password.get_secret_value())
    try:
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
            params = {
                "name": name,
                "prefix": prefix,
                "prefix_chars": len(prefix),
                "by_host": by_host,
            }
            (fresh,) = conn.execute(_FRESH, params).fetchone()
    except psycopg.Error as exc:
        return f"the heartbeats in the shared store cannot be read ({type(exc).__name__})"
    return None if fresh else f"no fresh heartbeat of {prefix if by_host else name}"


if __name__ == "__main__":
    why = check(sys.argv[1]) if len(sys.argv) == 2 else "usage: replica_healthcheck.py CONFIG"
    print(why or "healthy")
    sys.exit(0 if why is None else 1)
