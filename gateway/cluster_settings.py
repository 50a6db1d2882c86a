"""The ``cluster`` section of gateway.yaml: several replicas sharing one city (gateway/replica.py).

Without it the gateway is one process on its SQLite file, the embedded default. With it,
``citygw replica`` reads telemetry from NATS JetStream partitions and keeps every shared
record in PostgreSQL; the section names both, the lease timing and this replica.
"""

from __future__ import annotations

import socket
import uuid
from typing import Self

from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from devices.nats_ingest import NatsIngestSettings
from gateway.cluster_leases import OWNER_PATTERN
from gateway.evidence_server import EvidenceServerSettings
from gateway.replica_status import StatusSettings


class ClusterSettings(BaseModel):
    """Where the shared state lives and how leases are timed (see gateway/replica.py)."""

    # An error never quotes the input: it may hold the password.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    # libpq key=value or postgresql:// DSN without the password, which goes in
    # postgres_password (or postgres_password_file / _env), and without sslpassword: the
    # DSN is no secret (the effective config shows it).
    postgres_dsn: str = Field(min_length=1, max_length=1024)
    postgres_password: SecretStr | None = None
    nats: NatsIngestSettings = NatsIngestSettings()
    # Default: the host name and a random suffix, so a restarted replica never renews its
    # dead predecessor's leases with the old fences. A configured id must be unique among
    # live processes: two with one id would share its leases and fences, which no fence
    # can tell apart (set it only where a supervisor guarantees one process per id).
    replica_id: str | None = Field(None, pattern=OWNER_PATTERN.pattern)
    # A lease not renewed for this long may be taken over (a replica that died).
    lease_ttl_s: float = Field(6.0, ge=0.5, le=600.0)
    # How often a replica renews, rebalances and takes over: a few times per lease.
    lease_tick_s: float = Field(1.0, ge=0.05, le=200.0)
    # Alerts the incident desk takes from the shared log per commit.
    desk_batch: int = Field(500, ge=1, le=10_000)
    # How often the desk looks at the alert log when nothing woke it.
    desk_poll_s: float = Field(0.05, ge=0.005, le=10.0)
    # Read-only /healthz and /stats over HTTP (gateway/replica_status.py); off without it.
    status: StatusSettings | None = None
    # The signed evidence links platforms fetch (gateway/evidence_server.py), on a listener
    # of their own so readers never crowd out /healthz; off without it.
    evidence_server: EvidenceServerSettings | None = None

    @field_validator("postgres_dsn")
    @classmethod
    def _no_password_in_dsn(cls, dsn: str) -> str:
        try:
            params = conninfo_to_dict(dsn)
        except Exception:  # psycopg's parser error quotes the DSN: never shown
            raise ValueError("postgres_dsn does not parse as a libpq DSN") from None
        if "password" in params:
            raise ValueError("give the password as postgres_password, not in postgres_dsn")
        if "sslpassword" in params:  # the client key's: libpq takes it from nowhere else
            raise ValueError(
                "postgres_dsn holds sslpassword: the DSN is no secret (GET /api/v1/config"
                " shows it); give the replica a client key without a passphrase (sslkey, a"
                " file only it can read)"
            )
        return dsn

    @model_validator(mode="after")
    def _timing(self) -> Self:
        if self.lease_tick_s * 3 > self.lease_ttl_s:
            raise ValueError("lease_tick_s must be at most a third of lease_ttl_s")
        return self

    def owner(self) -> str:
        """A replica id for this process: the configured one, or a new random one on each
        call (the replica asks once, at start)."""
        if self.replica_id is not None:
            return self.replica_id
        host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())
        return f"{host[:64] or 'replica'}-{uuid.uuid4().hex[:8]}"
