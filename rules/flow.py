"""The gate between rule alerts and the incident book: silences, health confirmation,
inhibition and area (parent) conditions.

Every alert of every engine (sensor rules, device health, cameras) passes through
:meth:`AlertFlow.handle`; each comes out as one :class:`Handled`: the alert as it is to be
stored, why it filed nothing (``held_by``) and the case commands it made. The stages, in
the order they are asked about an alert that would file a new case:

1. **silence** — a silence in force at the alert's time matching its labels holds it
   (``held_by = "silence:<id>"``) until the silence ends (the latest-ending one if several);
2. **confirmation** — a device-health ``offline``/``suspect`` alert is held
   (``"confirm"``) for ``confirm_ms`` after it first fired: a glitch that recovers within
   it is stored but files nothing;
3. **inhibition** — an inhibit rule whose source fires (held or not) mutes the target
   (``"inhibited:<rule>"``) while it fires; an ``absorb`` rule attaches the target to the
   source's incident instead, and holds it while the source itself is held;
4. **file** — the incident book (dedup, merge, escalation) as before.

What is already filed is not gated: its repeats, escalations and clears go to its case,
so a silence made after a case was filed never leaves that case half told. A clear of a
held alert is stored with the holder and files nothing (and forgets the alert).

Release. A held alert is looked at again when its silence ends (or is removed, which ends
it now), when its confirmation elapses, when an inhibiting source clears or is filed, and
when it escalates (its labels may no longer match). If nothing holds it any more it is
filed then, stamped with the time it was released — the silence's end, the confirmation's
end, the source's clear — not the time the release was noticed: a live gateway that notices
on a wall-clock timer (:meth:`release_due`) and a replay that notices at its next event
file the same alert with the same incident id. :meth:`handle` first releases everything
due at or before each alert's own time, so a replay that feeds alerts in event order, and
calls ``release_due(ts)`` for each reading without alerts, releases at the first event at
or after the due time. An escalation while held updates the held alert; what is released is
its latest version.

Area conditions (:mod:`rules.area`) count firing alerts per group; the group's parent alert
fires when the count reaches ``min_count`` — before the member that filled it is gated, so
with an ``absorb`` rule that member already joins the parent's incident — and clears when
the count drops below it. Parents pass the same gate (a silence can hold one).

State: every alert the gate must remember — held ones, inhibition sources, area members
and parents — is one plain-JSON entry per alert key in ``states`` (store namespace
``gate``), committed with the batch that changed it, like the engines' state. A held alert
and the incident book thus agree after any crash. Silences are not state of the gate: the
gateway keeps them in its store and hands them over (:meth:`put_silence`); an alert keeps
its release time (``due_ms``), so one held by a silence that ended while the gateway was
down is released at the silence's end on the first call after the restart.

Logs: each alert filed or cleared is one INFO line with its source (``device_id``, or
``camera_id`` for a camera's) and its incident (``incident_id``) in ``extra``, so a log
collector finds every line about one device or incident. A replay (the backtest) passes
``log_changes=False``: its alerts are a preview, not events.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from domain import Alert, AlertState, CaseCommand
from rules.alerting import AlertingConfig, InhibitRule, matches
from rules.area import AREA_KIND, AreaGroups, Group, parent_key
from rules.incidents import IncidentBook
from rules.keyed_state import KeyedStates
from rules.silences import Silence

log = logging.getLogger(__name__)

CONFIRMED_RULES = frozenset({"offline", "suspect"})  # device health's own cases
CONFIRM = "confirm"


@dataclass(frozen=True, slots=True)
class Handled:
    """One alert as the store keeps it, and what it did."""

    alert: Alert
    held_by: str | None
    incident_id: str | None
    commands: list[CaseCommand] = field(default_factory=list)


@dataclass(slots=True)
class _Firing:
    """An alert the gate remembers while it fires."""

    alert: Alert  # its latest version
    fired_ms: int  # when it first fired: confirmation is measured from here
    held_by: str | None  # None: filed (given to the incident book)
    due_ms: int | None  # when a held alert is looked at again by time alone

    def to_state(self) -> dict[str, Any]:
        return {"alert": self.alert.to_dict(), "fired_ms": self.fired_ms,
                "held_by": self.held_by, "due_ms": self.due_ms}  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Verdict:
    held_by: str | None = None
    due_ms: int | None = None
    absorb_into: str | None = None  # an incident id


_FILE = _Verdict()


class AlertFlow:
    def __init__(
        self,
        incidents: IncidentBook,
        config: AlertingConfig | None = None,
        confirm_ms: int = 0,
        *,
        log_changes: bool = True,
    ) -> None:
        config = config or AlertingConfig()
        self._log_changes = log_changes
        self._book = incidents
        self._inhibit: list[InhibitRule] = list(config.inhibit_rules)
        self._areas = AreaGroups(config.area_conditions)
        self._confirm_ms = confirm_ms
        self._silences: dict[int, Silence] = {}
        self._firing: dict[str, _Firing] = {}
        self._sources: dict[str, set[str]] = {rule.name: set() for rule in self._inhibit}
        self._due: list[tuple[int, str]] = []  # heap; entries checked against _firing
        self.states = KeyedStates()

    # -- inputs ---------------------------------------------------------------------------

    def handle(self, alerts: Iterable[Alert], out: list[Handled] | None = None) -> list[Handled]:
        """Gate each alert (in order), after releasing what is due at or before its time.
        Results are appended to ``out`` as they happen, so a caller that catches an error
        keeps what was done before it."""
        out = [] if out is None else out
        for alert in alerts:
            self._release(alert.ts, out)
            self._one(alert, out)
        return out

    def release_due(self, now_ms: int, out: list[Handled] | None = None) -> list[Handled]:
        """File held alerts whose silence or confirmation has ended by ``now_ms``; forget
        silences that have ended."""
        out = [] if out is None else out
        self._release(now_ms, out)
        for silence_id in [i for i, s in self._silences.items() if s.ends_ms <= now_ms]:
            del self._silences[silence_id]
        return out

    @property
    def next_due_ms(self) -> int | None:
        """When the next held alert is due to be looked at (None: none waits on time)."""
        while self._due and not self._is_due_entry(*self._due[0]):
            heapq.heappop(self._due)
        return self._due[0][0] if self._due else None

    def held(self, now_ms: int) -> dict[str, int]:
        """For operators: alerts held now, by what holds them (silence, confirm, inhibited),
        and the silences in force."""
        counts = {"silence": 0, "confirm": 0, "inhibited": 0}
        for firing in self._firing.values():
            if firing.held_by is not None:
                counts[firing.held_by.partition(":")[0]] += 1
        in_force = sum(s.status(now_ms) == "active" for s in self._silences.values())
        return {**counts, "silences_in_force": in_force}

    def put_silence(self, silence: Silence) -> None:
        """A silence made, extended or removed: alerts it holds are due at its (new) end.
        Call :meth:`release_due` after it to file what a removal released."""
        self._silences[silence.id] = silence
        holder = f"silence:{silence.id}"
        for key, firing in self._firing.items():
            if firing.held_by == holder and firing.due_ms != silence.ends_ms:
                self._set_due(key, firing, silence.ends_ms)

    def reconfigure(self, confirm_ms: int) -> None:
        """A new confirmation time: alerts held for confirmation are due at their first
        firing plus the new time (released at the next call if that has passed)."""
        self._confirm_ms = confirm_ms
        for key, firing in self._firing.items():
            if firing.held_by == CONFIRM:
                self._set_due(key, firing, firing.fired_ms + confirm_ms)

    def held_alerts(self) -> list[tuple[Alert, str]]:
        """The firing alerts held from their cases now, each with what holds it
        (``silence:<id>``, ``confirm``, an inhibition rule)."""
        return [(f.alert, f.held_by) for f in self._firing.values() if f.held_by is not None]

    def rearm(self, keys: Iterable[str]) -> None:
        """These alerts' case was closed on the platform: forget them (the engines re-arm
        them too, and fire them again if the condition still holds)."""
        for key in keys:
            self._areas.leave(key)
            if key in self._firing:
                self._forget(key)

    def load(self, key: str, state: dict[str, Any]) -> None:
        """Put back one remembered alert after a restart."""
        firing = _Firing(Alert.from_dict(state["alert"]), state["fired_ms"], state["held_by"],
                         state["due_ms"])  # fmt: skip
        self._firing[key] = firing
        self.states.load_state(key, state)
        self._index(key, firing)
        self._areas.join(firing.alert)

    # -- one alert ------------------------------------------------------------------------

    def _one(self, alert: Alert, out: list[Handled]) -> None:
        firing = self._firing.get(alert.key)
        if alert.state is AlertState.CLEARED:
            self._clear(alert, firing, out)
        elif firing is None and self._book.incident_of(alert.key) is not None:
            self._file(alert, alert.ts, _FILE, out)  # an update of a filed case
        elif firing is not None and firing.held_by is None:
            self._file(alert, firing.fired_ms, _FILE, out)
        else:
            fired_ms = alert.ts if firing is None else firing.fired_ms
            for group in self._areas.join(alert):
                self._fire_parent(group, alert, out)
            verdict = self._gate(alert, fired_ms, alert.ts)
            if verdict.held_by is not None:
                self._hold(alert, fired_ms, verdict, out)
            else:
                self._file(alert, fired_ms, verdict, out)

    def _clear(self, alert: Alert, firing: _Firing | None, out: list[Handled]) -> None:
        if firing is not None and firing.held_by is not None:
            out.append(Handled(alert, firing.held_by, None))
        else:
            commands = self._book.handle(alert)
            out.append(Handled(alert, None, _incident(commands), commands))
            self._logged(alert, _incident(commands))
        if firing is not None:
            self._forget(alert.key)
        for group in self._areas.leave(alert.key):
            parent = self._firing.get(parent_key(group))
            if parent is not None:
                count = self._areas.count(group)
                cleared = replace(parent.alert, state=AlertState.CLEARED, ts=alert.ts,
                                  values={"count": count})  # fmt: skip
                self._one(cleared, out)
        self._reconsider_targets(alert, alert.ts, out, absorb_only=False)

    def _fire_parent(self, group: Group, member: Alert, out: list[Handled]) -> None:
        if parent_key(group) not in self._firing:
            self._one(self._areas.parent(group, member), out)

    def _gate(self, alert: Alert, fired_ms: int, at_ms: int) -> _Verdict:
        labels = alert.labels
        holding = [s for s in self._silences.values() if s.silences(labels, at_ms)]
        if holding:
            silence = max(holding, key=lambda s: (s.ends_ms, s.id))
            return _Verdict(f"silence:{silence.id}", silence.ends_ms)
        if alert.rule_id in CONFIRMED_RULES and at_ms < fired_ms + self._confirm_ms:
            return _Verdict(CONFIRM, fired_ms + self._confirm_ms)
        for rule in self._inhibit:
            if not matches(rule.target_match, labels):
                continue
            sources = self._sources_for(rule, alert)
            if not sources:
                continue
            if rule.action == "absorb":
                filed = [self._book.incident_of(s) for s in sources]
                incidents = sorted(i for i in filed if i is not None)
                if incidents:
                    return _Verdict(absorb_into=incidents[0])
            return _Verdict(f"inhibited:{rule.name}")
        return _FILE

    def _sources_for(self, rule: InhibitRule, target: Alert) -> list[str]:
        """Firing sources of ``rule`` for ``target`` (in key order: deterministic)."""
        found = []
        for key in sorted(self._sources[rule.name]):
            if key == target.key:
                continue
            source = self._firing[key].alert.labels
            wanted = target.labels
            if all(source[name] and source[name] == wanted[name] for name in rule.equal):
                found.append(key)
        return found

    def _hold(self, alert: Alert, fired_ms: int, verdict: _Verdict, out: list[Handled]) -> None:
        self._remember(alert.key, _Firing(alert, fired_ms, verdict.held_by, verdict.due_ms))
        out.append(Handled(alert, verdict.held_by, None))

    def _file(self, alert: Alert, fired_ms: int, verdict: _Verdict, out: list[Handled]) -> None:
        if verdict.absorb_into is not None:
            commands = self._book.absorb(alert, verdict.absorb_into)
        else:
            commands = self._book.handle(alert)
        out.append(Handled(alert, None, _incident(commands), commands))
        self._logged(alert, _incident(commands))
        was = self._firing.get(alert.key)
        if self._remembered(alert):
            self._remember(alert.key, _Firing(alert, fired_ms, None, None))
        elif was is not None:
            self._forget(alert.key)
        if was is None or was.held_by is not None:  # newly filed: absorb targets may follow
            self._reconsider_targets(alert, alert.ts, out, absorb_only=True)

    def _remembered(self, alert: Alert) -> bool:
        """Whether a filed alert must be remembered: a parent, a member or a source."""
        if alert.kind == AREA_KIND or self._areas.is_member(alert.key):
            return True
        if not self._inhibit:
            return False
        labels = alert.labels
        return any(matches(rule.source_match, labels) for rule in self._inhibit)

    def _logged(self, alert: Alert, incident_id: str | None) -> None:
        """One line for an alert given to the incident book, with its source and incident."""
        if not self._log_changes:
            return
        ids = {"camera_id" if alert.origin == "video" else "device_id": alert.source_id}
        if incident_id is not None:
            ids["incident_id"] = incident_id
        log.info("alert %s %s: incident %s", alert.key, alert.state, incident_id, extra=ids)

    # -- release --------------------------------------------------------------------------

    def _release(self, upto_ms: int, out: list[Handled]) -> None:
        while (due := self.next_due_ms) is not None and due <= upto_ms:
            _, key = heapq.heappop(self._due)
            self._reconsider(key, due, out)

    def _reconsider_targets(
        self, source: Alert, at_ms: int, out: list[Handled], absorb_only: bool
    ) -> None:
        """``source`` cleared (or was filed): look again at what its rules hold."""
        if not self._inhibit:
            return
        labels = source.labels
        holders = {
            f"inhibited:{rule.name}"
            for rule in self._inhibit
            if matches(rule.source_match, labels) and (rule.action == "absorb" or not absorb_only)
        }
        if not holders:
            return
        waiting = sorted(k for k, f in self._firing.items() if f.held_by in holders)
        for key in waiting:
            self._reconsider(key, at_ms, out)

    def _reconsider(self, key: str, at_ms: int, out: list[Handled]) -> None:
        """Ask the gate again about a held alert at ``at_ms``: still held (perhaps by
        something else: no row is stored), or released and filed, stamped ``at_ms``."""
        firing = self._firing.get(key)
        if firing is None or firing.held_by is None:
            return
        at_ms = max(at_ms, firing.alert.ts)
        verdict = self._gate(firing.alert, firing.fired_ms, at_ms)
        if verdict.held_by is not None:
            if (verdict.held_by, verdict.due_ms) != (firing.held_by, firing.due_ms):
                self._remember(key, replace(firing, held_by=verdict.held_by,
                                            due_ms=verdict.due_ms))  # fmt: skip
            return
        self._file(replace(firing.alert, ts=at_ms), firing.fired_ms, verdict, out)

    # -- memory ---------------------------------------------------------------------------

    def _remember(self, key: str, firing: _Firing) -> None:
        self._firing[key] = firing
        self.states.load_state(key, firing.to_state())
        self.states.touch(key)
        self._index(key, firing)

    def _index(self, key: str, firing: _Firing) -> None:
        labels = firing.alert.labels
        for rule in self._inhibit:
            if matches(rule.source_match, labels):
                self._sources[rule.name].add(key)
            else:
                self._sources[rule.name].discard(key)
        if firing.due_ms is not None:
            heapq.heappush(self._due, (firing.due_ms, key))

    def _set_due(self, key: str, firing: _Firing, due_ms: int) -> None:
        self._remember(key, replace(firing, due_ms=due_ms))

    def _forget(self, key: str) -> None:
        del self._firing[key]
        self.states.rearm([key])
        for sources in self._sources.values():
            sources.discard(key)

    def _is_due_entry(self, due_ms: int, key: str) -> bool:
        firing = self._firing.get(key)
        return firing is not None and firing.held_by is not None and firing.due_ms == due_ms


def _incident(commands: list[CaseCommand]) -> str | None:
    return commands[0].incident_id if commands else None
