"""What a replica's workers share (gateway/replica.py): the cluster's context, and the
shared store as one lease holder may write it.

Every write of a lease holder runs on a ``FencedConnection``: each transaction it opens,
and each write outside one, first checks the lease inside that transaction
(``cluster_leases.fenced``), so a stale holder's write rolls back whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from detectors.config import CameraSettings
from devices.fleet import MessageRouter
from devices.nats_ingest import partition_of
from devices.registry import Device
from gateway import cluster_leases, pg_store
from gateway.cluster_settings import ClusterSettings
from gateway.config import GatewayConfig
from rules.settings import RuleSettings

# Statements run outside a transaction without a lease check: reads and transaction
# control. Everything else (INSERT, UPDATE, DELETE, WITH … INSERT, a comment before a
# write, MERGE, TRUNCATE …) runs in a transaction that checks the lease first.
_UNFENCED = ("SELECT", "COMMIT", "ROLLBACK", "END")
_OPENS = ("BEGIN", "START")


class FencedConnection(pg_store.PgConnection):
    """The shared store as one lease holder may write it: every transaction opened on it
    (``BEGIN``) and every write outside one checks ``owner``'s lease on ``lease`` with
    ``fence`` first, inside that same transaction (see the module docstring)."""

    def __init__(self, conn: pg_store.PgConnection, owner: str, lease: int, fence: int) -> None:
        super().__init__(conn.raw, conn.reopen)
        self.owner, self.lease, self.fence = owner, lease, fence

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        words = sql.split(None, 1)
        word = words[0].upper() if words else ""
        if word in _OPENS:
            cursor = super().execute("BEGIN")
            self._check()
            return cursor
        if word not in _UNFENCED and not self.in_transaction:
            with self._transaction():
                return super().execute(sql, params)
        return super().execute(sql, params)

    def executemany(self, sql: str, seq_of_params: Iterable[Any]) -> Any:
        if not self.in_transaction:
            with self._transaction():
                return super().executemany(sql, seq_of_params)
        return super().executemany(sql, seq_of_params)

    @contextlib.contextmanager
    def _transaction(self) -> Any:
        super().execute("BEGIN")
        try:
            self._check()
            yield
            super().execute("COMMIT")
        except BaseException:
            if self.in_transaction:
                super().execute("ROLLBACK")
            raise

    def _check(self) -> None:
        try:
            cluster_leases.fenced(self.raw, self.owner, self.lease, self.fence)
        except BaseException:
            super().execute("ROLLBACK")
            raise


@dataclass(frozen=True)
class ClusterContext:
    """What every worker of a replica shares: the config, the registry, the settings.

    Leases: 0..N-1 the ingest partitions, N the incident desk, N+1.. the cameras in id
    order (a change of the camera list, like one of N, needs every replica stopped and
    the lease table emptied: cluster_leases.LeaseTable refuses another count)."""

    config: GatewayConfig
    settings: ClusterSettings
    registry: Mapping[str, Device]
    rules: RuleSettings
    router: MessageRouter
    owner: str
    cameras: tuple[CameraSettings, ...]

    @property
    def partitions(self) -> int:
        return self.settings.nats.partition_count

    @property
    def desk_lease(self) -> int:
        return self.partitions

    @property
    def lease_count(self) -> int:
        return self.partitions + 1 + len(self.cameras)

    def camera_leases(self) -> dict[int, CameraSettings]:
        return {self.partitions + 1 + i: camera for i, camera in enumerate(self.cameras)}

    @cached_property
    def _lease_of_camera(self) -> dict[str, int]:
        """Each camera id's lease (ids are unique: gateway/config.py), built at the first
        key: the cameras (a tuple) and the partition count (frozen settings) never change
        in a context's life, while a replica routes every re-arm's key through here."""
        return {camera.id: lease for lease, camera in self.camera_leases().items()}

    def lease_of_key(self, key: str) -> int | None:
        """The lease holding an alert key's rule state: its device's partition, or its
        camera's lease; None for a source no longer configured."""
        source = key.split("/", 1)[0]
        if source in self.registry:
            return partition_of(source, self.partitions)
        return self._lease_of_camera.get(source)
