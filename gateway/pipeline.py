"""One batch of telemetry messages through decode → replay guard → rules → incidents.

The pipeline is synchronous and owns no I/O but the one store commit per batch, so the
same code serves the live MQTT path, the benchmark and (later) history replay.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Protocol

from case_bridge import outbox
from devices.fleet import MessageRouter
from devices.registry import Device
from devices.rejections import Rejection
from devices.replay_guard import ReplayGuard
from devices.status import DeviceStatus
from domain import Alert, CaseCommand, Reading
from gateway import store
from rules.device_health import DeviceHealth
from rules.engine import RuleEngine
from rules.incidents import IncidentBook
from rules.keyed_state import KeyedStates


class Message(Protocol):
    """Anything carrying an MQTT topic and payload (live messages, replayed rows)."""

    topic: str
    payload: bytes
    retain: bool


class Pipeline:
    def __init__(
        self,
        conn: sqlite3.Connection,
        registry: Mapping[str, Device],
        guard: ReplayGuard,
        engine: RuleEngine,
        incidents: IncidentBook,
        max_future_skew_ms: int,
        rule_states: Mapping[str, KeyedStates],
        health: DeviceHealth,
        router: MessageRouter,
    ) -> None:
        self._conn = conn
        self._registry = registry
        self._guard = guard
        self._engine = engine
        self._health = health
        self._router = router
        self._incidents = incidents
        self._max_future_skew_ms = max_future_skew_ms
        # Store namespace → the state of one rule engine (sensor rules, video rules, ...).
        self._rule_states = dict(rule_states)
        self.counters: Counter[str] = Counter()

    def process(self, messages: Sequence[Message], now_ms: int) -> list[CaseCommand]:
        """Apply a batch of telemetry and commit it; return the case commands it produced."""
        skew_ms, registry, decode = self._max_future_skew_ms, self._registry, self._router.decode
        decoded = [
            (m.topic, m.payload, decode(m.topic, m.payload, registry, now_ms, skew_ms, m.retain))
            for m in messages
        ]
        return self.process_decoded(decoded, now_ms)

    def process_decoded(
        self, items: Sequence[tuple[str, bytes, Reading | DeviceStatus | Rejection]], now_ms: int
    ) -> list[CaseCommand]:
        """Readings decoded by a transport's own codec (serial lines, Modbus registers,
        fleet payloads), each with where it came from and its raw bytes for dead letters."""
        batch = store.Batch()
        alerts: list[Alert] = []
        for origin, raw, reading in items:
            if isinstance(reading, DeviceStatus):
                self._health.status(reading.device_id, reading.online, now_ms)
                self.counters["status_online" if reading.online else "status_offline"] += 1
                continue
            if not isinstance(reading, Rejection):
                reading = self._guard.admit(reading) or reading
            if isinstance(reading, Rejection):
                batch.reject(now_ms, origin, reading.device_id, reading.reason, reading.detail, raw)
                self.counters[f"rejected_{reading.reason}"] += 1
                continue
            self.counters["accepted"] += 1
            verdict = self._health.check(reading, now_ms)
            alerts.extend(verdict.alerts)
            batch.readings.append(
                (reading.device_id, reading.ts, reading.seq, json.dumps(reading.values),
                 int(not verdict.trusted))
            )  # fmt: skip
            if verdict.trusted:
                alerts.extend(self._engine.process(reading))
            else:
                self.counters["suspect"] += 1
        return self._commit(batch, alerts, now_ms)

    def apply_alerts(self, alerts: Sequence[Alert], now_ms: int) -> list[CaseCommand]:
        """Alerts from other sources (cameras, device health): through the same incidents,
        committed with every state that changed since the last commit."""
        return self._commit(store.Batch(), alerts, now_ms)

    def close_incident(self, incident_id: str, reason: str) -> None:
        """The incident's case is final on the platform: close it, re-arm its alerts."""
        keys = self._incidents.close(incident_id, reason)
        if not keys:
            return
        for states in self._rule_states.values():
            states.rearm(keys)
        self._commit(store.Batch(), [], int(time.time() * 1000))

    def _commit(
        self, batch: store.Batch, alerts: Sequence[Alert], now_ms: int
    ) -> list[CaseCommand]:
        commands: list[CaseCommand] = []
        for alert in alerts:
            produced = self._incidents.handle(alert)
            incident_id = produced[0].incident_id if produced else None
            batch.alerts.append(
                (alert.key, str(alert.state), alert.ts, incident_id,
                 json.dumps(alert.to_dict(), ensure_ascii=False))
            )  # fmt: skip
            commands.extend(produced)
        batch.states.extend(("replay", k, v) for k, v in self._guard.take_dirty().items())
        batch.states.extend(("incident", k, v) for k, v in self._incidents.take_dirty().items())
        for ns, states in self._rule_states.items():
            batch.states.extend((ns, k, v) for k, v in states.take_dirty().items())
        writes = [partial(outbox.enqueue, command=c, now_ms=now_ms) for c in commands]
        store.commit(self._conn, batch, also=writes)
        self.counters["alerts"] += len(batch.alerts)
        self.counters["commands"] += len(commands)
        return commands


def restore(
    conn: sqlite3.Connection,
    guard: ReplayGuard,
    incidents: IncidentBook,
    rule_states: Mapping[str, KeyedStates],
) -> None:
    """Load the committed state back after a restart."""
    for device_id, state in store.load_states(conn, "replay"):
        guard.load(device_id, state)
    for ns, states in rule_states.items():
        for key, state in store.load_states(conn, ns):
            states.load_state(key, state)
    for _incident_id, incident in store.load_states(conn, "incident"):
        incidents.load(incident)
