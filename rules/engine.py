"""The rule engine: routes each Reading to its source's conditions and emits Alerts.

State lives in memory for speed and is handed to the caller as "dirty" snapshots after
each batch, so the gateway can commit it in the same transaction as the readings that
changed it: after a crash the engine resumes exactly where the committed history left it.

The conditions are built from a :class:`RuleSettings` and rebuilt by ``reconfigure`` (a
new threshold version, applied between batches). What happens to state already
accumulated — the carry-over — is defined here once:

- The state of a condition that still exists is kept as it is and judged by the new
  params from the next reading of its device on. So a dwell under way keeps its start and
  is measured against the new hold at the next reading if the value meets the new level
  (a shorter hold can fire at once), else it restarts; a dwell never starts before the
  first reading judged under a new, lower level. A firing alert is judged against the new
  clear level and hold, and clears through the normal path (a CLEARED alert, its case
  gets the clear): never silently dropped. Repeat edges already counted count towards a
  new count within a new window; rise samples are measured against a new rise and window.
- A condition switched off (``repeat_count`` or ``rise_cm`` unset) that was firing clears
  at its device's next reading (a CLEARED alert, "rule switched off"); one not firing is
  forgotten at once. A condition switched on starts from nothing.
- A new schedule applies from the next reading; a new time zone needs a new engine.
- ``reconfigure`` is all or nothing: every device's conditions are built first, and a
  device that cannot be built raises before anything changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo

from domain import DEFAULT_TZ, Alert, AlertState, Location, Reading, Schedule
from domain.schedule import ScheduleCheck
from rules.condition import Condition, Transition
from rules.device_rules import build_rules
from rules.keyed_state import KeyedStates
from rules.settings import RuleSettings, device_params


@dataclass(frozen=True, slots=True)
class SourceRules:
    """A registered device's conditions as the engine runs them, for readers that judge
    the same conditions another way (the backtest's column-wise replay): they may only
    do so where nothing but the conditions decides, hence ``scheduled`` and ``retiring``."""

    # (alert key, condition), in the order ``process`` judges them (and orders alerts).
    conditions: tuple[tuple[str, Condition], ...]
    scheduled: bool  # a schedule limits when the conditions are in force
    retiring: bool  # conditions switched off while firing clear at the next reading


@dataclass(frozen=True, slots=True)
class _Source:
    kind: str
    location: Location
    part_code: str
    # (alert key, condition) per condition, keys made once: process runs per reading.
    conditions: tuple[tuple[str, Condition], ...]
    schedule: ScheduleCheck | None  # None: always in force
    # Conditions switched off while firing: they clear at the next reading.
    retired: tuple[tuple[str, Condition], ...] = field(default=())


def alert_key(source_id: str, rule_id: str) -> str:
    return f"{source_id}/{rule_id}"


class RuleEngine:
    def __init__(self, settings: RuleSettings, tz: tzinfo = DEFAULT_TZ) -> None:
        """Conditions from ``settings``; schedules judged in ``tz`` (event time)."""
        self._settings = settings
        self._tz = tz
        self._sources: dict[str, _Source] = {}
        # One check per schedule object: devices without their own schedule share their
        # kind's, and with it the check's remembered minute.
        self._checks: dict[int, tuple[Schedule, ScheduleCheck]] = {}
        self.states = KeyedStates()

    @property
    def settings(self) -> RuleSettings:
        return self._settings

    def add_source(
        self,
        source_id: str,
        kind: str,
        location: Location,
        part_code: str = "",
    ) -> None:
        """Register a device; its params are its kind's with its ``settings.devices``
        overrides. Raises a ValueError naming the device on bad parameters."""
        self._sources[source_id] = self._build(source_id, kind, location, part_code)

    def source_rules(self, source_id: str) -> SourceRules | None:
        """What the engine runs for a registered device (None for an unknown one)."""
        source = self._sources.get(source_id)
        if source is None:
            return None
        return SourceRules(source.conditions, source.schedule is not None, bool(source.retired))

    def class_sites(self) -> list[tuple[str, Location]]:
        """``(class code, place)`` for each condition of each registered device: where
        sources of each class stand. A family's lead class is a case's class only near
        one of them (rules/incidents.py: bags beside a bin are the bin's collection point,
        bags in a lane far from bins are exposed rubbish)."""
        return [
            (condition.class_code, source.location)
            for source in self._sources.values()
            for _, condition in source.conditions
        ]

    def alert(
        self, reading: Reading, key: str, condition: Condition, transition: Transition
    ) -> Alert:
        """The alert ``process`` emits when ``condition`` (one of the reading's device's,
        under ``key``) makes ``transition`` at ``reading``: one place for its fields and
        summary. Raises KeyError for an unknown device."""
        source = self._sources[reading.device_id]
        return self._alert(reading, source, key, condition, transition)

    def reconfigure(self, settings: RuleSettings) -> None:
        """Apply a new settings version (between batches); see the module docstring."""
        old_settings, self._settings = self._settings, settings
        old_checks, self._checks = self._checks, {}
        try:
            rebuilt = {
                source_id: self._build(source_id, s.kind, s.location, s.part_code)
                for source_id, s in self._sources.items()
            }
        except ValueError:
            self._settings, self._checks = old_settings, old_checks
            raise
        for source_id, source in self._sources.items():
            kept = {key for key, _ in rebuilt[source_id].conditions}
            retired = []
            for key, condition in (*source.conditions, *source.retired):
                if key in kept:
                    continue
                if condition.firing(self.states.get(key, condition.initial_state)):
                    retired.append((key, condition))
                else:
                    self.states.rearm([key])
            if retired:
                rebuilt[source_id] = _with_retired(rebuilt[source_id], tuple(retired))
        self._sources = rebuilt

    def process(self, reading: Reading) -> list[Alert]:
        source = self._sources.get(reading.device_id)
        if source is None:
            return []
        alerts: list[Alert] = []
        if source.retired:
            alerts.extend(self._retire(reading, source))
            source = self._sources[reading.device_id]
        in_force = source.schedule is None or source.schedule(reading.ts)
        states = self.states
        for key, condition in source.conditions:
            state = states.get(key, condition.initial_state)
            step = condition.step(state, reading, in_force)
            if step is False:
                continue
            states.touch(key)
            if step is True:
                continue
            alerts.append(self._alert(reading, source, key, condition, step))
        return alerts

    def _build(self, source_id: str, kind: str, location: Location, part_code: str) -> _Source:
        params = device_params(self._settings, source_id, kind)
        conditions = build_rules(source_id, part_code, params)
        schedule: Schedule = params.schedule  # type: ignore[attr-defined]
        return _Source(
            kind,
            location,
            part_code,
            tuple((alert_key(source_id, c.rule_id), c) for c in conditions),
            None if schedule.always else self._check(schedule),
        )

    def _check(self, schedule: Schedule) -> ScheduleCheck:
        known = self._checks.get(id(schedule))
        if known is None:
            known = self._checks[id(schedule)] = (schedule, schedule.checker(self._tz))
        return known[1]

    def _retire(self, reading: Reading, source: _Source) -> list[Alert]:
        """Clear the firing alerts of conditions switched off (see the module docstring)."""
        alerts = []
        for key, condition in source.retired:
            transition = Transition(AlertState.CLEARED, condition.priority, "rule switched off")
            alerts.append(self._alert(reading, source, key, condition, transition))
        self.states.rearm([key for key, _ in source.retired])
        self._sources[reading.device_id] = _with_retired(source, ())
        return alerts

    def _alert(
        self,
        reading: Reading,
        source: _Source,
        key: str,
        condition: Condition,
        transition: Transition,
    ) -> Alert:
        return Alert(
            key=key,
            source_id=reading.device_id,
            rule_id=condition.rule_id,
            state=transition.state,
            class_code=condition.class_code,
            priority=transition.priority,
            location=source.location,
            ts=reading.ts,
            values=dict(reading.values),
            part_code=source.part_code,
            summary=f"{condition.rule_id} {transition.detail} ({_shown(reading)})",
            kind=source.kind,
        )


def _with_retired(source: _Source, retired: tuple[tuple[str, Condition], ...]) -> _Source:
    return _Source(
        source.kind, source.location, source.part_code, source.conditions, source.schedule, retired
    )


def _shown(reading: Reading) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(reading.values.items()))


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)
