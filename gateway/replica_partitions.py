"""An ingest partition's devices on the replica holding its lease (gateway/replica.py).

Their replay guard, health and rule state are restored from the shared store when the lease
is taken; each batch from the partition's durable consumer goes through the embedded
gateway's own Pipeline and commits readings, dead letters, rule state and the alerts it
made (into the shared alert log) in one transaction fenced by the partition's lease.

Each commit also records which messages it took (gateway/replica_committed.py), so a
delivery that comes again after its commit applies nothing twice and files no false
``duplicate``; a message the store refuses for its content goes to the dead letters through
``refuse`` (gateway/replica_poison.py finds it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from devices.nats_ingest import IngestMessage, partition_of
from devices.rejections import Reason, Rejection
from devices.replay_guard import ReplayGuard
from gateway import alert_log, replica_committed
from gateway.pipeline import Pipeline
from gateway.replica_context import ClusterContext, FencedConnection
from rules.device_health import DeviceHealth
from rules.engine import RuleEngine
from rules.incidents import IncidentBook


class PartitionWorker:
    """One ingest partition's devices while this replica holds its lease."""

    def __init__(self, context: ClusterContext, partition: int, conn: FencedConnection) -> None:
        config = context.config
        self.partition, self.fence, self.conn = partition, conn.fence, conn
        self._router, self._skew_ms = context.router, int(config.ingest.max_future_skew_s * 1000)
        self.devices = devices = {
            device_id: device
            for device_id, device in context.registry.items()
            if partition_of(device_id, context.partitions) == partition
        }
        self.engine = RuleEngine(context.rules, config.tz)
        self.health = DeviceHealth(context.rules)
        for d in devices.values():
            self.engine.add_source(d.device_id, d.kind, d.location, d.part_code)
            self.health.add_device(d.device_id, d.kind, d.location, d.part_code)
        guard = ReplayGuard()
        rule_states = {"rule": self.engine.states, "health": self.health.states}
        loaders: dict[str, Callable[[str, Any], None]] = {
            "replay": guard.load,
            "rule": self.engine.states.load_state,
            "health": self.health.states.load_state,
        }
        for ns, load in loaders.items():
            for key, state in alert_log.device_states(conn, ns, list(devices)):
                load(key, state)
        # Never fed: a worker's alerts go to the desk through the alert log.
        book = IncidentBook(config.merge.to_policy(), config.merge)
        self.pipeline = Pipeline(
            conn, devices, guard, self.engine, book, self._skew_ms, rule_states, self.health,
            context.router, forward_alerts=partial(alert_log.append, lease=partition),
        )  # fmt: skip
        self.committed = replica_committed.load(conn, partition)
        self.health.start(now_ms())

    def process(self, messages: Sequence[IngestMessage], floor: int) -> int:
        """Part of a delivery (or all of it) whose lowest stream sequence is ``floor``: the
        desk's re-arms for these devices applied first and deleted in the same commit, and
        the messages this partition committed already skipped. Returns how many were."""
        fresh, digests = self.committed.split(messages)
        record = self.committed.after(messages, digests, floor, refused_device=None)
        self.pipeline.process(fresh, now_ms(), self._writes(record))
        self.committed = record
        return len(messages) - len(fresh)

    def refuse(self, message: IngestMessage, device: str, sqlstate: str, floor: int) -> None:
        """A message of ``device`` the store refused for its content: a ``store_refused``
        dead letter with the SQLSTATE (never the store's message, which may quote the
        value), committed with the record that it is done, so that a delivery coming again
        skips it."""
        detail = f"the store refused it (SQLSTATE {sqlstate})"
        refusal = Rejection(Reason.STORE_REFUSED, detail, device)
        digests = [replica_committed.payload_digest(message.payload)]
        record = self.committed.after([message], digests, floor, refused_device=device)
        item = (message.topic, message.payload, refusal)
        self.pipeline.process_decoded([item], now_ms(), self._writes(record))
        self.committed = record

    def device_of(self, message: IngestMessage) -> str:
        """The device a message names, for its dead letter ("" when it names none)."""
        try:
            decoded = self._router.decode(
                message.topic, message.payload, self.devices, now_ms(), self._skew_ms
            )
        except Exception:  # a codec bug: the pipeline's decode already kept it as internal
            return ""
        return getattr(decoded, "device_id", "")

    def _writes(self, record: replica_committed.Committed) -> list[Callable[[Any], object]]:
        """The commit's own writes: the desk's re-arms taken (applied now) and the record."""
        also = alert_log.take_rearms(self.conn, self.partition, self.pipeline.rearm)
        return [*also, partial(replica_committed.write, partition=self.partition, record=record)]

    def tick_health(self) -> None:
        """Devices gone silent: their offline alerts, through the alert log."""
        if alerts := self.health.tick(now_ms()):
            self.pipeline.apply_alerts(alerts, now_ms())


def now_ms() -> int:
    """Wall-clock milliseconds, the pipeline's ``now_ms``."""
    return int(time.time() * 1000)
