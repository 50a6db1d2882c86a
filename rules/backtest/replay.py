"""Replay one settings version over stored readings: alerts, then the cases they file.

Per device, the alerts come from the very engines the live gateway runs —
``DeviceHealth.check`` then ``RuleEngine.process`` for each reading, in arrival order —
or from the fast path (:mod:`rules.backtest.vector`), which gives the same alerts and is
used where it can be proven to: every condition is a threshold rule, no schedule, and
health would never mute a reading. Everything else (repeat and rise conditions, scheduled
devices, devices health finds stuck or jumping) takes the scalar path. A device's alerts
depend only on its own readings, so devices are replayed one after the other.

All alerts — and the recorded events handed in (offline alerts, which the live gateway
makes on its wall clock, and camera alerts) — then pass the alert flow in event-time order
(ties: recorded first, then by device and reading), the flow and incident book deciding the
cases, exactly as live.

Definitions the live gateway does not need:

- **Warm-up.** The window ``[since, until]`` is replayed from ``since - warm_up`` with
  empty state (a dwell or a firing alert that began before it is rebuilt from the readings
  of the warm-up). Alerts and cases before ``since`` shape the state but are not reported.
- **Case closures.** On the platform a crew closes a case at some wall-clock time, which
  the store does not record in event time, and a proposed version would have had other
  cases anyway. The backtest closes a case when the last of its alerts has cleared, at that
  clear's time; closing re-arms nothing (a cleared rule is already armed). So a bin that
  fills every day files a case every day, under both versions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from operator import itemgetter

from domain import Alert, AlertState
from rules.backtest.series import DeviceInfo, DeviceSeries
from rules.backtest.vector import (
    Transition,
    battery_transitions,
    never_suspect,
    rule_transitions,
)
from rules.condition import Transition as RuleTransition
from rules.device_health import DeviceHealth
from rules.engine import RuleEngine
from rules.flow import AlertFlow, Handled
from rules.incidents import IncidentBook
from rules.settings import RuleSettings
from rules.thresholds import ThresholdRule

DeviceDone = Callable[[int], None]  # readings replayed, for a progress bar


@dataclass(slots=True)
class Case:
    """One case the run would have filed."""

    incident_id: str
    class_code: str
    grid_code: str
    kind: str
    alert_key: str  # the alert that opened it
    opened_ms: int
    priority: str
    closed_ms: int | None = None
    keys: set[str] = field(default_factory=set)
    firing: set[str] = field(default_factory=set)


@dataclass(slots=True)
class RunResult:
    alerts: list[Alert]  # every alert of the run, warm-up included, in flow order
    handled: list[Handled]
    cases: list[Case]  # opened at or after ``since``
    fast_devices: int = 0
    scalar_devices: int = 0


def build_engines(
    settings: RuleSettings, devices: Iterable[DeviceInfo], tz: tzinfo
) -> tuple[DeviceHealth, RuleEngine]:
    """Fresh engines for one settings version, every device registered as live."""
    health, engine = DeviceHealth(settings, log_changes=False), RuleEngine(settings, tz)
    for d in devices:
        health.add_device(d.device_id, d.kind, d.location, d.part_code)
        engine.add_source(d.device_id, d.kind, d.location, d.part_code)
    return health, engine


def scalar_alerts(series: DeviceSeries, health: DeviceHealth, engine: RuleEngine) -> list[Alert]:
    """What the live gateway did with each reading, reading by reading."""
    alerts: list[Alert] = []
    for index in range(len(series)):
        reading = series.reading(index)
        verdict = health.check(reading, reading.ts)
        alerts.extend(verdict.alerts)
        if verdict.trusted:
            alerts.extend(engine.process(reading))
    return alerts


def fast_alerts(
    series: DeviceSeries, health: DeviceHealth, engine: RuleEngine
) -> list[Alert] | None:
    """The same alerts from the columns, or ``None`` where the fast path cannot prove it
    gives them (the caller then takes the scalar path)."""
    device_id = series.device.device_id
    source = engine.source_rules(device_id)
    device = health.device(device_id)
    if source is None or device is None or source.scheduled or source.retiring:
        return None
    rules = [c for _, c in source.conditions]
    if not all(type(rule) is ThresholdRule for rule in rules):
        return None
    if len(series) == 0:
        return []
    if device.judged and not never_suspect(series, device.params):
        return None
    found: list[tuple[int, int, Alert]] = []
    for index, state, _ in battery_transitions(series, device.params):
        found.append((index, -1, health.battery_alert(series.reading(index), state)))
    for order, ((key, rule), transitions) in enumerate(
        zip(source.conditions, rule_transitions(series, rules), strict=True)
    ):
        for transition in transitions:
            found.append((transition[0], order, _rule_alert(engine, series, key, rule, transition)))
    found.sort(key=lambda item: (item[0], item[1]))
    return [alert for _, _, alert in found]


def _rule_alert(
    engine: RuleEngine, series: DeviceSeries, key: str, rule: ThresholdRule, transition: Transition
) -> Alert:
    index, state, stage = transition
    if state is AlertState.CLEARED:
        change = RuleTransition(state, rule.priority, "cleared")
    else:
        level = rule.stages[stage]
        change = RuleTransition(
            state, level.priority, f"stage {stage + 1}: {rule.metric} ≥ {level.at:g}"
        )
    return engine.alert(series.reading(index), key, rule, change)


def device_alerts(
    series: Iterable[DeviceSeries],
    health: DeviceHealth,
    engine: RuleEngine,
    fast: bool = True,
    done: DeviceDone | None = None,
) -> tuple[list[list[Alert]], int]:
    """Every device's alerts (one list per device, in the order given) and how many
    devices the fast path took."""
    out, fast_count = [], 0
    for one in series:
        alerts = fast_alerts(one, health, engine) if fast else None
        if alerts is None:
            alerts = scalar_alerts(one, health, engine)
        else:
            fast_count += 1
        out.append(alerts)
        if done is not None:
            done(len(one))
    return out, fast_count


def run_flow(
    per_device: Sequence[list[Alert]],
    recorded: Sequence[Alert],
    flow: AlertFlow,
    book: IncidentBook,
    since_ms: int,
    until_ms: int,
) -> tuple[list[Alert], list[Handled], list[Case]]:
    """Pass every alert through the flow in event-time order; follow the cases."""
    ordered = sorted(
        [(a.ts, 0, i, 0, a) for i, a in enumerate(recorded)]
        + [(a.ts, 1, d, i, a) for d, alerts in enumerate(per_device) for i, a in enumerate(alerts)],
        key=itemgetter(0, 1, 2, 3),
    )
    alerts = [item[4] for item in ordered]
    handled: list[Handled] = []
    cases: dict[str, Case] = {}
    for alert in alerts:
        before = len(handled)
        flow.handle([alert], handled)
        _follow(handled[before:], cases, book)
    before = len(handled)
    flow.release_due(until_ms, handled)
    _follow(handled[before:], cases, book)
    kept = [c for c in cases.values() if c.opened_ms >= since_ms]
    return alerts, handled, sorted(kept, key=lambda c: (c.opened_ms, c.incident_id))


def _follow(handled: Sequence[Handled], cases: dict[str, Case], book: IncidentBook) -> None:
    for item in handled:
        for command in item.commands:
            alert = command.alert
            case = cases.get(command.incident_id)
            if case is None:
                case = cases[command.incident_id] = Case(
                    command.incident_id, alert.class_code, alert.location.grid_code,
                    alert.kind, alert.key, alert.ts, str(command.priority),
                )  # fmt: skip
            case.priority = str(command.priority)
            case.keys.add(alert.key)
            if alert.state is AlertState.CLEARED:
                case.firing.discard(alert.key)
            else:
                case.firing.add(alert.key)
            if not case.firing and alert.state is AlertState.CLEARED and case.closed_ms is None:
                case.closed_ms = alert.ts
                book.close(command.incident_id, "backtest: every alert cleared")
