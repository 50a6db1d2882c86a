"""One batch of telemetry messages through decode → replay guard → rules → alert flow →
incidents.

The pipeline is synchronous and owns no I/O but the store commits (one per batch, on the
commit thread for the live MQTT path), so the same code serves the live MQTT path, the
benchmark and history replay.

No message can stop it. The codecs refuse bad input with a reason; should one of them, the
replay guard, device health or a rule still raise on some message nobody foresaw, that
message alone becomes an ``internal`` dead letter carrying the error, and the batch goes on.
Without this, one QoS 1 message would kill the gateway, be redelivered on restart and kill
it again, and every reading queued behind it would never be stored.

Every alert passes the alert flow (rules/flow.py: silences, health confirmation,
inhibition, area conditions) before the incident book; each is stored with why it filed
nothing (``held_by``), and the flow's state commits with the alert rows, so a held alert
and the incident book agree after any crash. ``release_due`` (a wall-clock timer) files
held alerts whose silence or confirmation has ended when no new alert comes to do it.

Suspected duplicates the incident book finds (``take_suspects``) commit with the incidents
that produced them; an operator's merge of one (``merge_duplicate``) commits the book's
commands with the pair marked merged and the API's audit entry.

On several replicas (gateway/replica.py) the same class serves both halves of the work. A
partition worker's pipeline holds the rules of its own devices and hands every alert to
``forward_alerts``, a write that commits with the readings (the shared alert log), instead
of its alert flow; the incident desk's pipeline takes those alerts through
``apply_alerts`` as it takes a camera's, and the alerts a closed case re-arms, whose rule
state lives with another replica, go to ``rearm_elsewhere`` in the desk's commit.

A commit the store refuses (disk full, I/O error) is not lost either: the batch, whose
effects the in-memory rule state already holds, is kept and committed first thing on the
next try (``StoreUnavailable`` tells the caller not to acknowledge anything meanwhile).

Commits go through a ``CommitQueue`` (gateway/commit_queue.py), in the order their batches
were made. The live MQTT path ``prepare``s a batch (decode, rules, alerts: everything but
the commit) and queues its commit for the commit thread (``start_commit``), so the next
batch is prepared while the disk syncs; every other write commits before it returns, after
whatever was queued before it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import replace
from functools import partial
from typing import Protocol

from case_bridge import outbox
from devices.fleet import MessageRouter
from devices.registry import Device
from devices.rejections import Reason, Rejection
from devices.replay_guard import ReplayGuard
from devices.status import DeviceStatus
from domain import Alert, AlertState, CaseCommand, CommandKind, Reading
from gateway import duplicates, silences, store
from gateway.commit_queue import CommitQueue, StoreUnavailable
from rules.device_health import DeviceHealth
from rules.engine import RuleEngine
from rules.flow import AlertFlow, Handled
from rules.incidents import IncidentBook
from rules.keyed_state import KeyedStates
from rules.silences import Silence

log = logging.getLogger(__name__)

Decoded = Reading | DeviceStatus | Rejection
# (device, reason) pairs whose refusals are followed for sampled logging.
REFUSALS_TRACKED = 10_000


class Message(Protocol):
    """Anything carrying an MQTT topic and payload (live messages, replayed rows)."""

    topic: str
    payload: bytes
    retain: bool


def internal_rejection(exc: BaseException, device_id: str = "") -> Rejection:
    """An unforeseen error while handling one message, kept with the message."""
    return Rejection(Reason.INTERNAL, f"{type(exc).__name__}: {exc}", device_id)


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
        flow: AlertFlow | None = None,
        enrich: Callable[[Alert], Alert] | None = None,
        forward_alerts: Callable[..., object] | None = None,
        rearm_elsewhere: Callable[..., object] | None = None,
        background_commits: bool = False,
    ) -> None:
        """``forward_alerts(conn, alerts=, now_ms=)`` and ``rearm_elsewhere(conn, keys=)``
        are writes run inside the commit's transaction (see the module docstring). With
        ``background_commits`` a prepared batch commits on a thread (``start_commit``):
        ``conn`` is then the pipeline's alone, used by no other part of the process."""
        self._conn = conn
        self._registry = registry
        self._guard = guard
        self._engine = engine
        self._health = health
        self._router = router
        self._incidents = incidents
        # Without one, a flow with no silences, confirmation or inhibition: every alert
        # goes straight to the incident book.
        self._flow = flow if flow is not None else AlertFlow(incidents)
        # The case dispatch data's view of an alert (its unit grid from its place, its
        # class's priority: case_bridge/dispatch.py), taken before anything stores or
        # judges it, so the alerts table, silences, storms and the case all agree.
        self._enrich = enrich or (lambda alert: alert)
        self._max_future_skew_ms = max_future_skew_ms
        self._forward_alerts = forward_alerts
        self._rearm_elsewhere = rearm_elsewhere
        # Alert keys re-armed here since the last commit, for ``rearm_elsewhere``.
        self._rearmed: list[str] = []
        # Store namespace → the state of one rule engine (sensor rules, video rules, ...).
        self._rule_states = dict(rule_states)
        # Commands whose alert was re-filed by this process (committed or still unsaved).
        self._refiled: set[str] = set()
        self.counters: Counter[str] = Counter()
        self._commits = CommitQueue(partial(store.commit, conn), self.counters, background_commits)
        # Refusals seen per (device, reason), for ``_log_refusal``'s sampling.
        self._refusals: dict[tuple[str, str], int] = {}

    @property
    def unsaved(self) -> bool:
        """Some batch's commit failed and waits for ``flush``."""
        return self._commits.failed

    @property
    def saved_upto(self) -> int:
        """Every batch ``prepare`` gave a ticket up to this one is committed."""
        return self._commits.saved_upto

    def dropped(self, ticket: int) -> bool:
        """Whether ``prepare``'s batch of ``ticket`` (at most ``saved_upto``) was dropped by
        an error not the store's: not saved, so never to be acknowledged. Asked in ticket
        order."""
        return self._commits.dropped(ticket)

    @property
    def queued_batches(self) -> int:
        """Batches prepared and waiting for the next commit."""
        return self._commits.queued_batches

    @property
    def committing(self) -> Future[None] | None:
        """The background commit under way: await it, then ``settle``."""
        return self._commits.in_flight

    def process(
        self,
        messages: Sequence[Message],
        now_ms: int,
        also: Sequence[Callable[[sqlite3.Connection], object]] = (),
        queue_only: bool = False,
    ) -> list[CaseCommand]:
        """Apply a batch of telemetry and commit it with ``also`` (writes of the caller's,
        such as the re-arms it applied); return the case commands it produced. With
        ``queue_only`` the commit is only queued (``prepare``)."""
        decoded = [(m.topic, m.payload, self._decode(m, now_ms)) for m in messages]
        return self.process_decoded(decoded, now_ms, also, queue_only)

    def prepare(self, messages: Sequence[Message], now_ms: int) -> tuple[int, list[CaseCommand]]:
        """``process`` without the commit: the batch is queued behind those committing, for
        ``start_commit``. Returns its ticket (acknowledge it once ``saved_upto`` reaches
        it) and the case commands it produced (in the outbox once it is saved)."""
        commands = self.process(messages, now_ms, queue_only=True)
        return self._commits.last_ticket, commands

    def start_commit(self) -> bool:
        """Start committing what is queued on the commit thread, unless a commit is under
        way or a refused one waits for ``flush``. Returns whether one started."""
        return self._commits.start()

    def settle(self) -> None:
        """Take the outcome of the background commit (waiting for it if it is still under
        way): saved, or kept for ``flush`` (``unsaved``)."""
        self._commits.settle()

    def unsaved_readings(self, device_id: str) -> list[tuple]:
        """The device's readings in batches queued or committing, oldest first, as the
        store's rows ``(ts, seq, values_json, suspect)``: a sensor excerpt reads them
        beside the stored ones instead of waiting for the disk."""
        return [
            (ts, seq, values, suspect)
            for batch in self._commits.unsaved()
            for device, ts, seq, values, suspect in batch.readings
            if device == device_id
        ]

    def close(self) -> None:
        """Save what is still queued (tried once: kept writes of cameras, device health or
        the API have no broker to send them again), then stop the commit thread."""
        self._commits.settle()
        if not self._commits.idle:
            try:
                self._commits.save()
            except StoreUnavailable as exc:
                log.error("stopping with writes the store refused, not saved: %s", exc)
        self._commits.close()

    def _decode(self, message: Message, now_ms: int) -> Decoded:
        try:
            return self._router.decode(
                message.topic, message.payload, self._registry, now_ms,
                self._max_future_skew_ms, message.retain,
            )  # fmt: skip
        except Exception as exc:  # a codec bug costs one message, never the gateway
            log.exception("decoding a message on %.200r failed", message.topic)
            return internal_rejection(exc)

    def process_decoded(
        self,
        items: Sequence[tuple[str, bytes, Decoded]],
        now_ms: int,
        also: Sequence[Callable[[sqlite3.Connection], object]] = (),
        queue_only: bool = False,
    ) -> list[CaseCommand]:
        """Readings decoded by a transport's own codec (serial lines, Modbus registers,
        fleet payloads), each with where it came from and its raw bytes for dead letters.
        With ``queue_only`` the commit is only queued (``prepare``)."""
        batch = store.Batch()
        batch.also.extend(also)
        alerts: list[Alert] = []
        for origin, raw, result in items:
            try:
                outcome = self._admit(result, now_ms)
            except Exception as exc:
                log.exception("handling a message on %.200r failed", origin)
                outcome = internal_rejection(exc, getattr(result, "device_id", ""))
            if isinstance(outcome, Rejection):
                batch.reject(now_ms, origin, outcome.device_id, outcome.reason, outcome.detail, raw)
                self.counters[f"rejected_{outcome.reason}"] += 1
                self._log_refusal(outcome)
            elif outcome is not None:
                row, produced = outcome
                batch.readings.append(row)
                alerts.extend(produced)
        return self._commit(batch, alerts, now_ms, queue_only)

    def _log_refusal(self, refused: Rejection) -> None:
        """Log the 1st, 10th, 100th … refusal per device and reason (never the payload): a
        device sending junk at line rate gives a few lines, not a flood. At most
        ``REFUSALS_TRACKED`` pairs are followed; past that, refusals are counted only."""
        key = (refused.device_id[:128], str(refused.reason))
        seen = self._refusals.get(key)
        if seen is None and len(self._refusals) >= REFUSALS_TRACKED:
            return
        seen = self._refusals[key] = (seen or 0) + 1
        if seen == 10 ** (len(str(seen)) - 1):
            log.warning(
                "reading refused (%s, %d so far for this device): %.200s",
                key[1], seen, refused.detail, extra={"device_id": key[0]},
            )  # fmt: skip

    def _admit(self, result: Decoded, now_ms: int) -> Rejection | tuple[tuple, list[Alert]] | None:
        """One decoded message's effect: a refusal, nothing (a status), or its reading's
        row and alerts. Nothing is added to the batch until the whole message succeeded."""
        if isinstance(result, DeviceStatus):
            self._health.status(result.device_id, result.online, now_ms)
            self.counters["status_online" if result.online else "status_offline"] += 1
            return None
        if isinstance(result, Rejection):
            return result
        if not store.storable(result.ts, result.seq):
            return Rejection(Reason.OUT_OF_RANGE, "ts or seq beyond 64 bits", result.device_id)
        refused = self._guard.admit(result)
        if refused is not None:
            return refused
        verdict = self._health.check(result, now_ms)
        alerts = list(verdict.alerts)
        if verdict.trusted:
            alerts.extend(self._engine.process(result))
        row = (result.device_id, result.ts, result.seq, store.values_text(result.values),
               int(not verdict.trusted))  # fmt: skip
        # Counted once nothing more can fail: an internal refusal is not also an accept.
        self.counters["accepted"] += 1
        if not verdict.trusted:
            self.counters["suspect"] += 1
        return row, alerts

    def apply_alerts(
        self,
        alerts: Sequence[Alert],
        now_ms: int,
        also: Sequence[Callable[[sqlite3.Connection], object]] = (),
    ) -> list[CaseCommand]:
        """Alerts from other sources (cameras, device health, the shared alert log):
        through the same incidents, committed with every state that changed since the last
        commit and ``also`` (the alert log's rows taken)."""
        batch = store.Batch()
        batch.also.extend(also)
        return self._commit(batch, alerts, now_ms)

    def rearm(self, keys: list[str]) -> None:
        """Forget these alerts' rule state, as a closed case does here: the desk's re-arms
        reaching the replica that holds the devices. Committed with the next batch."""
        self._rearm(keys)

    def close_incident(self, incident_id: str, reason: str) -> None:
        """The incident's case is final on the platform: close it, re-arm its alerts."""
        keys = self._incidents.close(incident_id, reason)
        if not keys:
            return
        self._rearm(keys)
        self._commit(store.Batch(), [], int(time.time() * 1000))

    def persisting(self, incident_id: str) -> list[Alert]:
        """The open incident's alerts that still fire (rules/incidents.py ``persisting``)."""
        return self._incidents.persisting(incident_id)

    def flag_of(self, incident_id: str) -> str:
        """The case status at which the open incident's standing closure flag was raised."""
        return self._incidents.flag_of(incident_id)

    def flag(
        self,
        incident_id: str,
        status: str,
        evidence: Sequence[Alert],
        now_ms: int,
        close_reason: str | None = None,
    ) -> list[CaseCommand]:
        """Raise a closure flag (gateway/closure_check.py): the evidence goes to the case
        through the outbox, committed with the flag. With ``close_reason`` the case is final:
        the incident closes, and only its alerts that have cleared are re-armed. Those still
        firing stay as the engines hold them, so the problem that persists files no second
        case; when it clears, the engines clear the alert as always, and the next occurrence
        fires afresh and files a new case — what a re-arm gives, without the duplicate."""
        commands = self._incidents.flag(incident_id, status, list(evidence), now_ms)
        if close_reason is not None:
            still = {alert.key for alert in self._incidents.persisting(incident_id)}
            keys = self._incidents.close(incident_id, close_reason)
            self._rearm([key for key in keys if key not in still])
        return self._save_commands(store.Batch(), commands, now_ms)

    def unflag(self, incident_id: str, now_ms: int) -> None:
        """The case went back to be handled again: its next verification is checked afresh."""
        if self._incidents.unflag(incident_id):
            self._save_commands(store.Batch(), [], now_ms)

    def merge_duplicate(
        self,
        incident_id: str,
        into_id: str,
        who: str,
        reason: str,
        score: float | None = None,
        also: Sequence[Callable[[sqlite3.Connection], object]] = (),
    ) -> list[CaseCommand]:
        """An operator merges the suspected duplicate ``incident_id`` into ``into_id``
        (rules/incidents.py ``merge_duplicate``: an attach to the kept case, a void of the
        duplicate's). The commands, the incidents, the pair marked merged (by ``who``, for
        ``reason``) and ``also`` (the API's audit entry) commit together; ``score`` is the
        pair's, recorded with the merge. ``ValueError``
        (nothing changed) when either incident is not open."""
        now_ms = int(time.time() * 1000)
        commands = self._incidents.merge_duplicate(incident_id, into_id, now_ms, score)
        batch = store.Batch()
        batch.also.append(
            partial(duplicates.mark_merged, incident_id=incident_id, into_id=into_id, who=who,
                    reason=reason, at_ms=now_ms)
        )  # fmt: skip
        batch.also.extend(also)
        log.info("incident %s merged into %s by %s: %s", incident_id, into_id, who, reason[:200])
        return self._save_commands(batch, commands, now_ms)

    def _rearm(self, keys: list[str]) -> None:
        for states in self._rule_states.values():
            states.rearm(keys)
        self._flow.rearm(keys)
        if self._rearm_elsewhere is not None:
            self._rearmed.extend(keys)

    def refile(self, command: CaseCommand, now_ms: int) -> list[CaseCommand]:
        """A command's case was closed on the platform before the command reached it: file
        its alert again as a problem of its own, once per command (a crash before the
        outbox marks the row makes the case bridge hand it over again)."""
        marker = command.command_id
        self._commits.settle()  # the connection is the commit thread's while it commits
        if marker in self._refiled or store.has_state(self._conn, "refiled", marker):
            return []
        self._refiled.add(marker)
        batch = store.Batch()
        batch.states.append(("refiled", marker, {"ms": now_ms}))
        alert = replace(command.alert, priority=command.priority)  # an escalation stays one
        return self._commit(batch, [alert] if alert.state is not AlertState.CLEARED else [], now_ms)

    def release_due(self, now_ms: int) -> list[CaseCommand]:
        """File held alerts whose silence or confirmation has ended by ``now_ms`` (wall
        clock): the gateway calls it on a timer. Commits only when something was due."""
        due = self._flow.next_due_ms
        if due is None or due > now_ms:
            self._flow.release_due(now_ms)  # forgets ended silences; nothing to commit
            return []
        handled: list[Handled] = []
        try:
            self._flow.release_due(now_ms, handled)
        except Exception:  # what was released before the error is still committed
            log.exception("releasing held alerts failed")
            self.counters["internal_alert_errors"] += 1
        return self._store_handled(store.Batch(), handled, now_ms)

    def update_silence(self, silence: Silence, now_ms: int) -> list[CaseCommand]:
        """A silence was made, extended or removed (already in the store): alerts it holds
        are due at its new end, and a removal files those still firing now."""
        self._flow.put_silence(silence)
        handled: list[Handled] = []
        try:
            self._flow.release_due(now_ms, handled)
        except Exception:
            log.exception("releasing held alerts failed")
            self.counters["internal_alert_errors"] += 1
        return self._store_handled(store.Batch(), handled, now_ms)

    def flush(self) -> None:
        """Commit every batch queued or refused; raises ``StoreUnavailable`` again while
        the store still refuses."""
        self._commits.save()

    def _commit(
        self, batch: store.Batch, alerts: Sequence[Alert], now_ms: int, queue_only: bool = False
    ) -> list[CaseCommand]:
        if self._forward_alerts is not None:
            if alerts:
                batch.also.append(partial(self._forward_alerts, alerts=list(alerts), now_ms=now_ms))
                self.counters["alerts_forwarded"] += len(alerts)
            return self._save_commands(batch, [], now_ms, queue_only)
        handled: list[Handled] = []
        for alert in alerts:
            done = len(handled)
            try:
                alert = self._enrich(alert)
                self._flow.handle([alert], handled)
            except Exception:  # kept in the alerts table, so the operator sees what failed
                log.exception("incident handling failed for alert %s", alert.key)
                self.counters["internal_alert_errors"] += 1
                if not any(h.alert is alert for h in handled[done:]):
                    handled.append(Handled(alert, None, None))
        return self._store_handled(batch, handled, now_ms, queue_only)

    def _store_handled(
        self, batch: store.Batch, handled: Sequence[Handled], now_ms: int, queue_only: bool = False
    ) -> list[CaseCommand]:
        """Commit the batch with the alert rows, every state changed since the last
        commit and the outbox rows of the commands."""
        commands: list[CaseCommand] = []
        for h in handled:
            alert = h.alert
            batch.alerts.append(
                (alert.key, str(alert.state), alert.ts, h.incident_id,
                 json.dumps(alert.to_dict(), ensure_ascii=False), h.held_by)
            )  # fmt: skip
            commands.extend(h.commands)
        self._save_commands(batch, commands, now_ms, queue_only)
        self.counters["alerts"] += len(handled)
        self.counters["held_alerts"] += sum(h.held_by is not None for h in handled)
        return commands

    def _save_commands(
        self,
        batch: store.Batch,
        commands: list[CaseCommand],
        now_ms: int,
        queue_only: bool = False,
    ) -> list[CaseCommand]:
        """Commit (or with ``queue_only`` queue) the batch with every state changed since
        the last batch and the outbox rows of ``commands``, with the suspected duplicates
        found meanwhile."""
        self._take_states(batch)
        batch.suspects.extend(self._incidents.take_suspects())
        batch.also.extend(partial(outbox.enqueue, command=c, now_ms=now_ms) for c in commands)
        if queue_only:
            self._commits.queue(batch)
        else:
            self._commits.save(batch)
        self.counters["commands"] += len(commands)
        self.counters["incidents_opened"] += sum(c.kind is CommandKind.OPEN for c in commands)
        return commands

    def write_states(self, conn: sqlite3.Connection) -> None:
        """Write every state changed since the last batch on ``conn``, inside the caller's
        transaction.

        A new threshold version is stored with what ``reconfigure`` did to the engines'
        state (gateway/threshold_versions.py calls ``apply`` inside the transaction that
        inserts the version, and ``apply`` ends with this). Without it a crash before the
        next batch brings the old state back under the new settings: a repeat condition
        switched off (its edges forgotten) and on again counted the edges from before.
        Refused while an earlier batch waits for its commit: its older states would later
        overwrite these (the caller's ``flush`` before its transaction commits them)."""
        if not self._commits.idle:
            raise StoreUnavailable("an earlier batch is not committed yet")
        batch = store.Batch()
        self._take_states(batch)
        store.write_states(conn, batch.states)
        for write in batch.also:  # re-arms sent elsewhere
            write(conn)

    def _take_states(self, batch: store.Batch) -> None:
        batch.states.extend(("replay", k, v) for k, v in self._guard.take_dirty().items())
        batch.states.extend(("incident", k, v) for k, v in self._incidents.take_dirty().items())
        for ns, states in self._rule_states.items():
            batch.states.extend((ns, k, v) for k, v in states.take_dirty().items())
        batch.states.extend(("gate", k, v) for k, v in self._flow.states.take_dirty().items())
        if self._rearmed:
            assert self._rearm_elsewhere is not None
            batch.also.append(partial(self._rearm_elsewhere, keys=self._rearmed))
            self._rearmed = []


def restore(
    conn: sqlite3.Connection,
    guard: ReplayGuard | None,
    incidents: IncidentBook,
    rule_states: Mapping[str, KeyedStates],
    flow: AlertFlow | None = None,
    now_ms: int | None = None,
) -> None:
    """Load the committed state back after a restart (closed incidents stay in the store):
    with ``flow``, its held and remembered alerts and the silences in force at ``now_ms``
    (default: now). Without ``guard`` (a cluster's desk, which reads no telemetry) the
    replay states stay in the store for the partitions' workers."""
    if guard is not None:
        for device_id, state in store.load_states(conn, "replay"):
            guard.load(device_id, state)
    for ns, states in rule_states.items():
        for key, state in store.load_states(conn, ns):
            states.load_state(key, state)
    for incident in store.load_open_incidents(conn):
        incidents.load(incident)
    if flow is not None:
        for key, state in store.load_states(conn, "gate"):
            flow.load(key, state)
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        for silence in silences.overlapping(conn, now_ms):
            flow.put_silence(silence)
