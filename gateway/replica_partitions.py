"""An ingest partition's devices on the replica holding its lease (gateway/replica.py).

Their replay guard, health and rule state are restored from the shared store when the lease
is taken; each batch from the partition's durable consumer goes through the embedded
gateway's own Pipeline and commits readings, dead letters, rule state and the alerts it
made (into the shared alert log) in one transaction fenced by the partition's lease.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from devices.nats_ingest import IngestMessage, partition_of
from devices.replay_guard import ReplayGuard
from gateway import alert_log
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
        devices = {
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
            conn, devices, guard, self.engine, book,
            int(config.ingest.max_future_skew_s * 1000), rule_states, self.health,
            context.router, forward_alerts=partial(alert_log.append, lease=partition),
        )  # fmt: skip
        self.health.start(now_ms())

    def process(self, messages: Sequence[IngestMessage]) -> None:
        """One batch, with the desk's re-arms for these devices applied first and deleted
        in the same commit."""
        also = alert_log.take_rearms(self.conn, self.partition, self.pipeline.rearm)
        self.pipeline.process(messages, now_ms(), also)

    def tick_health(self) -> None:
        """Devices gone silent: their offline alerts, through the alert log."""
        if alerts := self.health.tick(now_ms()):
            self.pipeline.apply_alerts(alerts, now_ms())


def now_ms() -> int:
    """Wall-clock milliseconds, the pipeline's ``now_ms``."""
    return int(time.time() * 1000)
