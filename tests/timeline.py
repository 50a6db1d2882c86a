"""Timeline acceptance harness: inputs at given times in, the exact outputs at given times out.

In the manner of Alertmanager's acceptance tests (``test/with_api_v2/acceptance``): a test
declares a sequence of steps, each at a wall-clock time of a fixed week, holding what
happens then (readings with their event time, operator actions, a timer tick) and exactly
what the gateway must write then — alerts (key, state, ts, incident, held_by), case
commands (id, kind, priority, the alert they carry), refusals, and on request the incident
book. Everything not declared is expected NOT to happen: a step without ``alerts=`` must
write no alert.

The gateway is the real one, built from a YAML config over a registry CSV and a SQLite file
in the test's folder (``gateway.service.Gateway``, not started: no broker, no platform), and
the harness drives its ``Pipeline`` exactly as the service's loops do, only with a
controlled clock: ``now_ms`` is the step's time and nothing sleeps. Outputs are read back
from the store (alerts table, outbox, dead letters, incident state), i.e. what was
committed, not what some method returned.

Incident ids are content hashes; the harness names them ``#1``, ``#2`` … in the order they
first appear, so a command reads ``#1/2`` (the incident's second command). A failure prints
the whole timeline, expected against actual, as a diff with full context.

Times are "HH:MM[:SS[.mmm]]" on Monday 2024-06-03 in Asia/Shanghai, or with a weekday
prefix ("tue 00:05") for later days of that week.
"""

from __future__ import annotations

import csv
import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from devices.status import DeviceStatus
from domain import Category, Location, Observation, Reading
from gateway import silences
from gateway.backtest import BacktestRequest, backtest_from_config
from gateway.config import load_config
from gateway.service import Gateway
from rules.settings import SettingsError
from rules.silences import Extension, NewSilence

TZ = ZoneInfo("Asia/Shanghai")
WEEK_START = datetime(2024, 6, 3, tzinfo=TZ)  # a Monday
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(
    r"^(?:(?P<day>mon|tue|wed|thu|fri|sat|sun) )?"
    r"(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)(?::(?P<s>[0-5]\d)(?:\.(?P<ms>\d{3}))?)?$"
)


def ms(when: str) -> int:
    """Epoch milliseconds of a timeline time ("10:05", "10:05:30.250", "tue 00:05")."""
    match = _TIME.match(when)
    if match is None:
        raise ValueError(f"timeline time {when!r}: expected [day ]HH:MM[:SS[.mmm]]")
    day = DAYS.index(match["day"] or "mon")
    moment = WEEK_START + timedelta(
        days=day,
        hours=int(match["h"]),
        minutes=int(match["m"]),
        seconds=int(match["s"] or 0),
        milliseconds=int(match["ms"] or 0),
    )
    return int(moment.timestamp() * 1000)


def show_time(ts_ms: int) -> str:
    """The timeline spelling of an epoch-ms time (the inverse of ``ms``, shortest form)."""
    moment = datetime.fromtimestamp(ts_ms / 1000, TZ)
    day_index = (moment.date() - WEEK_START.date()).days
    if 0 <= day_index < 7:
        day = "" if day_index == 0 else f"{DAYS[day_index]} "
    else:
        day = f"{moment.date().isoformat()} "
    text = f"{day}{moment:%H:%M}"
    millis = ts_ms % 1000
    if moment.second or millis:
        text += f":{moment:%S}"
    if millis:
        text += f".{millis:03d}"
    return text


# ---------------------------------------------------------------------------------- devices

_FIXED = ("device_id", "kind", "lat", "lon", "address", "grid_code", "part_code")
GRID_A = "350102003001001"
GRID_B = "350102003001002"

# A small town: two bins at one collection point (8 m apart), one bin a kilometre away,
# a manhole cover, two water gauges in one grid and one in another.
DEVICES: dict[str, dict[str, str]] = {
    "BIN-1": {"kind": "bin", "lat": "26.08300", "lon": "119.29500", "grid_code": GRID_A},
    "BIN-2": {"kind": "bin", "lat": "26.08306", "lon": "119.29504", "grid_code": GRID_A},
    "BIN-3": {"kind": "bin", "lat": "26.09200", "lon": "119.29500", "grid_code": GRID_B},
    "MH-1": {
        "kind": "manhole_cover",
        "lat": "26.08700",
        "lon": "119.30200",
        "grid_code": GRID_A,
        "part_code": "35010201003000001",
    },
    "WL-1": {
        "kind": "water_level",
        "lat": "26.08000",
        "lon": "119.30000",
        "grid_code": GRID_A,
        "warning_cm": "30",
        "alarm_cm": "50",
    },
    "WL-2": {
        "kind": "water_level",
        "lat": "26.08100",
        "lon": "119.30100",
        "grid_code": GRID_A,
        "warning_cm": "30",
        "alarm_cm": "50",
    },
    "WL-3": {
        "kind": "water_level",
        "lat": "26.09900",
        "lon": "119.31000",
        "grid_code": GRID_B,
        "warning_cm": "30",
        "alarm_cm": "50",
    },
}


def device(device_id: str, **columns: object) -> dict[str, str]:
    """A registry row from the town above, with extra or changed columns (overrides)."""
    row = {"device_id": device_id, **DEVICES[device_id]}
    row.update({k: "" if v is None else str(v) for k, v in columns.items()})
    return row


def _write_registry(path: Path, rows: Sequence[dict[str, str]]) -> None:
    extra = sorted({k for row in rows for k in row} - set(_FIXED))
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, [*_FIXED, *extra], restval="")
        writer.writeheader()
        writer.writerows(rows)


def _merged(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------- actions


class Action:
    """Something that happens at a step: it changes the gateway, and says what it is.
    An action with a result of its own (a silence's id, a threshold version) returns it
    as output lines from ``apply``, and says which lines it expects in ``expected``."""

    def describe(self) -> str:
        raise NotImplementedError

    def apply(self, timeline: Timeline, now_ms: int) -> list[str] | None:
        raise NotImplementedError

    def expected(self) -> list[str]:
        return []


@dataclass(frozen=True)
class _Reading(Action):
    device_id: str
    values: dict[str, float | bool]
    at: str | None  # event time when it differs from the step's (late delivery)
    seq: int | None

    def describe(self) -> str:
        shown = " ".join(f"{k}={_value(v)}" for k, v in self.values.items())
        late = f" @{self.at}" if self.at else ""
        return f"reading {self.device_id} {shown}{late}"

    def apply(self, timeline: Timeline, now_ms: int) -> None:
        timeline.readings([self.reading(timeline, now_ms)], now_ms)

    def reading(self, timeline: Timeline, now_ms: int) -> Reading:
        ts = ms(self.at) if self.at else now_ms
        kind = timeline.kinds[self.device_id]
        return Reading(self.device_id, kind, ts, dict(self.values), self.seq)


def reading(device_id: str, at: str | None = None, seq: int | None = None, **values) -> _Reading:
    """A decoded reading; its event time is the step's unless ``at`` says otherwise."""
    return _Reading(device_id, values, at, seq)


@dataclass(frozen=True)
class Zone:
    """A camera zone the harness watches with the gateway's video rule engine, as the
    service registers the zones of its configured cameras (without a video stream)."""

    camera_id: str
    zone_id: str
    zone_type: str  # no_dumping (rule "dumping", class 06010) or no_vending ("stall", 09006)
    near: str  # a device of the town: the zone lies at its place and in its grid

    @property
    def class_code(self) -> str:
        return "06010" if self.zone_type == "no_dumping" else "09006"

    def location(self) -> Location:
        spot = DEVICES[self.near]
        return Location(float(spot["lat"]), float(spot["lon"]), "", spot["grid_code"])


@dataclass(frozen=True)
class _Frame(Action):
    camera_id: str
    objects: dict[str, str]  # zone → label standing still there

    def describe(self) -> str:
        seen = " ".join(f"{z}:{label}" for z, label in self.objects.items()) or "empty"
        return f"frame {self.camera_id} {seen}"

    def apply(self, timeline: Timeline, now_ms: int) -> None:
        box = (100.0, 100.0, 140.0, 160.0)
        observations = [
            Observation(
                self.camera_id,
                zone,
                label,
                _CATEGORIES[label],
                track,
                box,
                0.9,
                now_ms,
                stationary_ms=3_600_000,
                frame_size=(640, 480),
            )
            for track, (zone, label) in enumerate(self.objects.items())
        ]
        gw = timeline.gateway
        if alerts := gw.video_engine.process(self.camera_id, now_ms, observations):
            gw.pipeline.apply_alerts(alerts, now_ms)


_CATEGORIES = {"rubbish": Category.RUBBISH, "stall": Category.STALL_PART}


def frame(camera_id: str, **objects: str) -> _Frame:
    """One analysed frame of a camera: ``zone="rubbish"`` (or ``"stall"``) puts a still
    object of that label in the zone; zones not named are empty."""
    return _Frame(camera_id, objects)


@dataclass(frozen=True)
class _Tick(Action):
    def describe(self) -> str:
        return "tick"

    def apply(self, timeline: Timeline, now_ms: int) -> None:
        timeline.tick(now_ms)


def tick() -> _Tick:
    """The gateway's timers fire now: device silence is looked for (health)."""
    return _Tick()


@dataclass(frozen=True)
class _Status(Action):
    device_id: str
    online: bool

    def describe(self) -> str:
        return f"status {self.device_id} {'online' if self.online else 'offline'}"

    def apply(self, timeline: Timeline, now_ms: int) -> None:
        status = DeviceStatus(self.device_id, self.online, now_ms)
        timeline.gateway.pipeline.process_decoded([("timeline", b"", status)], now_ms)


def status(device_id: str, online: bool) -> _Status:
    """The device's status topic: ``online=False`` is its Last Will."""
    return _Status(device_id, online)


@dataclass(frozen=True)
class _Restart(Action):
    def describe(self) -> str:
        return "gateway restarts"

    def apply(self, timeline: Timeline, now_ms: int) -> None:
        timeline.restart(now_ms)


def restart() -> _Restart:
    """The gateway process stops and starts again on the same store and config."""
    return _Restart()


@dataclass(frozen=True)
class _CaseClosed(Action):
    incident: str

    def describe(self) -> str:
        return f"case of {self.incident} closed on the platform"

    def apply(self, timeline: Timeline, now_ms: int) -> None:
        timeline.gateway.pipeline.close_incident(timeline.incident_id(self.incident), "closed")


def case_closed(incident: str) -> _CaseClosed:
    """Status sync says the incident's case is final: the incident closes, its alerts re-arm."""
    return _CaseClosed(incident)


@dataclass(frozen=True)
class _Silence(Action):
    matchers: dict[str, str]
    until: str
    start: str | None
    silence_id: int

    def describe(self) -> str:
        shown = " ".join(f"{k}={v}" for k, v in self.matchers.items())
        since = f" from {self.start}" if self.start else ""
        return f"silence {shown}{since} until {self.until}"

    def apply(self, timeline: Timeline, now_ms: int) -> list[str]:
        request = NewSilence(
            matchers=self.matchers,
            author="ops",
            reason="maintenance",
            starts_ms=ms(self.start) if self.start else None,
            ends_ms=ms(self.until),
        )
        made = timeline.gateway.silences.create(request, now_ms)
        return [f"    silence  {made.id} made"]

    def expected(self) -> list[str]:
        return [f"    silence  {self.silence_id} made"]


def silence(until: str, start: str | None = None, id: int = 1, **matchers: str) -> _Silence:
    """An operator silences alerts whose labels match (device=…, grid=…, class=…, kind=…,
    zone=…, rule=…) from ``start`` (default now) until ``until``; ``id`` is the id the
    store must give it."""
    return _Silence(matchers, until, start, id)


@dataclass(frozen=True)
class _SilenceChange(Action):
    silence_id: int
    until: str | None  # None: removed

    def describe(self) -> str:
        if self.until is None:
            return f"silence {self.silence_id} removed"
        return f"silence {self.silence_id} extended until {self.until}"

    def apply(self, timeline: Timeline, now_ms: int) -> None:
        book = timeline.gateway.silences
        if self.until is None:
            book.remove(self.silence_id, "ops", "work done", now_ms)
        else:
            extension = Extension(author="ops", reason="more work", ends_ms=ms(self.until))
            book.extend(self.silence_id, extension, now_ms)


def unsilence(silence_id: int) -> _SilenceChange:
    """The operator removes a silence: it ends now."""
    return _SilenceChange(silence_id, None)


def extend_silence(silence_id: int, until: str) -> _SilenceChange:
    return _SilenceChange(silence_id, until)


@dataclass(frozen=True)
class _Thresholds(Action):
    changes: dict[str, Any]
    rollback_to: int | None
    version: int | None
    refused: str | None

    def describe(self) -> str:
        if self.rollback_to is not None:
            return f"thresholds rolled back to version {self.rollback_to}"
        return "thresholds set " + " ".join(f"{k}={_value(v)}" for k, v in self.changes.items())

    def apply(self, timeline: Timeline, now_ms: int) -> list[str]:
        gw = timeline.gateway
        try:
            if self.rollback_to is not None:
                recorded = gw.threshold_versions.rollback(
                    self.rollback_to, "ops", "undo", None, gw.apply_settings
                )
            else:
                recorded = gw.threshold_versions.set(
                    self.changes, "ops", "tuning", None, gw.apply_settings
                )
        except SettingsError as exc:
            return [f"    refused  {exc}"]
        return [f"    version  {recorded.latest.version}"]

    def expected(self) -> list[str]:
        if self.refused is not None:
            return [f"    refused  {self.refused}"]
        return [f"    version  {self.version}"]


def set_thresholds(
    changes: Mapping[str, Any], version: int | None = None, refused: str | None = None
) -> _Thresholds:
    """A threshold change through the versions (as the API makes it), applied to the
    engines now, between batches: the new ``version`` number, or the refusal's message."""
    return _Thresholds(dict(changes), None, version, refused)


def rollback(to_version: int, version: int) -> _Thresholds:
    """Roll the thresholds back to ``to_version``; a new ``version`` is made."""
    return _Thresholds({}, to_version, version, None)


@dataclass(frozen=True)
class _Backtest(Action):
    since: str
    until: str
    changes: dict[str, Any]
    report: tuple[str, ...]

    def describe(self) -> str:
        changes = " ".join(f"{k}={_value(v)}" for k, v in self.changes.items())
        return f"backtest {self.since}–{self.until} {changes}"

    def apply(self, timeline: Timeline, now_ms: int) -> list[str]:
        backtest = backtest_from_config(load_config(timeline.config_path))
        request = BacktestRequest(ms(self.since), ms(self.until), self.changes)
        return [f"    backtest {line}" for line in _report_lines(backtest.run(request))]

    def expected(self) -> list[str]:
        return [f"    backtest {line}" for line in self.report]


def backtest(since: str, until: str, changes: Mapping[str, Any], report: Sequence[str]):
    """The operator backtests ``changes`` over the stored window (gateway/backtest.py, on
    the same store, read-only); ``report`` is the report's lines as ``_report_lines``
    writes them: the case counts per class, each added and removed case (its opening
    alert, class, grid, open–close), and the time to detect of the cases in both runs."""
    return _Backtest(since, until, dict(changes), tuple(report))


def _report_lines(report: Mapping[str, Any]) -> list[str]:
    def counts(run: Mapping[str, Any]) -> str:
        by_class = ", ".join(f"{k}: {v}" for k, v in sorted(run["by_class"].items()))
        return f"{run['cases']} {{{by_class}}}"

    def case(c: Mapping[str, Any]) -> str:
        closed = show_time(c["closed_ms"]) if c["closed_ms"] is not None else "open"
        return (f"{c['alert_key']} class {c['class']} grid {c['grid']}"
                f" {show_time(c['opened_ms'])}–{closed}")  # fmt: skip

    lines = [f"cases current {counts(report['current'])}, proposed {counts(report['proposed'])}"]
    lines += [f"added {case(c)}" for c in report["added"]]
    lines += [f"removed {case(c)}" for c in report["removed"]]
    detect = report["time_to_detect"]
    lines.append(f"detect {detect['matched']} matched, {detect['earlier']} earlier,"
                 f" {detect['later']} later, median {detect['median_delta_s']} s")  # fmt: skip
    return lines


@dataclass(frozen=True)
class _Do(Action):
    text: str
    effect: Callable[[Timeline, int], None]

    def describe(self) -> str:
        return self.text

    def apply(self, timeline: Timeline, now_ms: int) -> None:
        self.effect(timeline, now_ms)


def do(text: str, effect: Callable[[Timeline, int], None]) -> _Do:
    """An operator action the harness has no word for yet: ``effect(timeline, now_ms)``."""
    return _Do(text, effect)


# ---------------------------------------------------------------------------------- outputs


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class ExpectedAlert:
    key: str
    state: str
    incident: str | None
    at: str | None
    held_by: str | None

    def line(self, step_ms: int) -> str:
        return _alert_line(self.key, self.state, ms(self.at) if self.at else step_ms,
                           self.incident, self.held_by, step_ms)  # fmt: skip


def alert(
    key: str, state: str, incident: str | None = None, at: str | None = None, held_by=None
) -> ExpectedAlert:
    """An alert row: ``incident`` is the label of the incident it went to (None: none),
    ``at`` its event time when not the step's, ``held_by`` why it filed nothing."""
    return ExpectedAlert(key, state, incident, at, held_by)


@dataclass(frozen=True)
class ExpectedCommand:
    command: str
    kind: str
    priority: str
    key: str
    state: str
    at: str | None

    def line(self, step_ms: int) -> str:
        ts = ms(self.at) if self.at else step_ms
        return _command_line(self.command, self.kind, self.priority, self.key, self.state, ts,
                             step_ms)  # fmt: skip


def command(
    command_id: str,
    kind: str,
    priority: str,
    key: str,
    state: str = "firing",
    at: str | None = None,
) -> ExpectedCommand:
    """A case command: ``#1/2`` is incident #1's second command; ``key`` and ``state`` are
    the alert it carries, ``at`` that alert's event time when not the step's."""
    return ExpectedCommand(command_id, kind, priority, key, state, at)


@dataclass(frozen=True)
class ExpectedIncident:
    label: str
    status: str
    priority: str
    class_code: str
    keys: tuple[str, ...]

    def line(self) -> str:
        return _incident_line(self.label, self.status, self.priority, self.class_code, self.keys)


def incident(label: str, status: str, priority: str, class_code: str, *keys: str):
    """An incident as the book holds it after the step: its alert keys in binding order."""
    return ExpectedIncident(label, status, priority, class_code, keys)


def _alert_line(key, state, ts, incident_label, held_by, step_ms) -> str:
    when = "" if ts == step_ms else f" @{show_time(ts)}"
    to = f" → {incident_label}" if incident_label else " → no incident"
    held = f" held_by={held_by}" if held_by else ""
    return f"    alert    {key} {state}{when}{to}{held}"


def _command_line(command_id, kind, priority, key, state, ts, step_ms) -> str:
    when = "" if ts == step_ms else f" @{show_time(ts)}"
    return f"    command  {command_id} {kind} {priority} ← {key} {state}{when}"


def _incident_line(label, status, priority, class_code, keys) -> str:
    return f"    incident {label} {status} {priority} {class_code} [{', '.join(keys)}]"


# ------------------------------------------------------------------------------------ steps


@dataclass(frozen=True)
class Step:
    when: str
    actions: tuple[Action, ...]
    alerts: tuple[ExpectedAlert, ...]
    commands: tuple[ExpectedCommand, ...]
    refused: tuple[str, ...]
    incidents: tuple[ExpectedIncident, ...] | None

    def expected_lines(self) -> list[str]:
        """What the step must write, as the harness prints it (the header aside)."""
        now = ms(self.when)
        lines = [line for action in self.actions for line in action.expected()]
        lines += [a.line(now) for a in self.alerts]
        lines += [c.line(now) for c in self.commands]
        lines += [f"    refused  {r}" for r in self.refused]
        if self.incidents is not None:
            lines += [i.line() for i in self.incidents] or ["    incident (none)"]
        return lines


def at(
    when: str,
    *actions: Action,
    alerts: Iterable[ExpectedAlert] = (),
    commands: Iterable[ExpectedCommand] = (),
    refused: Iterable[str] = (),
    incidents: Iterable[ExpectedIncident] | None = None,
) -> Step:
    """One step: ``actions`` happen in order at ``when`` (adjacent readings as one batch),
    then exactly ``alerts``, ``commands`` and ``refused`` ("<device> <reason>") must have
    been written; ``incidents``, when given, is every incident the store holds."""
    ms(when)  # a typo in a time fails where it is written
    return Step(
        when,
        actions,
        tuple(alerts),
        tuple(commands),
        tuple(refused),
        None if incidents is None else tuple(incidents),
    )


def _header(when: str, actions: Sequence[Action]) -> list[str]:
    time = show_time(ms(when))
    texts = [a.describe() for a in actions] or ["(nothing)"]
    return [f"{time:<16} {texts[0]}", *(f"{'':<16} {t}" for t in texts[1:])]


# --------------------------------------------------------------------------------- timeline


@dataclass
class _Cursor:
    """How far into each output table the harness has read."""

    alert_id: int = 0
    outbox_seq: int = 0
    dead_letter_id: int = 0


@dataclass
class Timeline:
    """A gateway over ``tmp_path`` with the given registry rows and config (merged over a
    minimal config); ``play`` drives it through steps and checks every output."""

    tmp_path: Path
    devices: Sequence[dict[str, str]]
    config: Mapping[str, Any] = field(default_factory=dict)
    zones: Sequence[Zone] = ()

    def __post_init__(self) -> None:
        registry = self.tmp_path / "devices.csv"
        _write_registry(registry, self.devices)
        base = {
            "mqtt": {"url": "mqtt://127.0.0.1:1"},
            "devices": {"registry": str(registry)},
            "store": {"path": str(self.tmp_path / "gateway.db")},
            "case_platform": {"url": "http://127.0.0.1:1", "token": "unused"},
        }
        self.config_path = self.tmp_path / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(_merged(base, self.config), allow_unicode=True))
        self.gateway = Gateway(load_config(self.config_path))
        self.conn = self.gateway.conn
        self._add_zones()
        self.kinds = {d["device_id"]: d["kind"] for d in self.devices}
        self._cursor = _Cursor()
        self._labels: dict[str, str] = {}  # incident id → "#n"
        self._started = False
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(alerts)")}
        self._held_column = "held_by" in columns

    # -- what actions call

    def readings(self, readings: Sequence[Reading], now_ms: int) -> None:
        items = [("timeline", b"", r) for r in readings]
        self.gateway.pipeline.process_decoded(items, now_ms)

    def tick(self, now_ms: int) -> None:
        """What the service's timers do: file held alerts that are due (a silence ended, a
        confirmation elapsed), then look for silent devices."""
        self.gateway.pipeline.release_due(now_ms)
        if alerts := self.gateway.health.tick(now_ms):
            self.gateway.pipeline.apply_alerts(alerts, now_ms)

    def restart(self, now_ms: int) -> None:
        """A new gateway on the same files: it restores the committed state, and its
        health clocks start now (as the service's health loop does)."""
        self.gateway.conn.close()
        self.gateway = Gateway(load_config(self.config_path))
        self.conn = self.gateway.conn
        self._add_zones()
        self.gateway.health.start(now_ms)
        # The gateway loads the silences in force at the wall clock's now; this one starts
        # at the timeline's now.
        for silence in silences.overlapping(self.conn, now_ms):
            self.gateway.flow.put_silence(silence)

    def _add_zones(self) -> None:
        for z in self.zones:
            self.gateway.video_engine.add_zone(
                z.camera_id, z.zone_id, z.zone_type, z.location(), z.class_code
            )

    def incident_id(self, label: str) -> str:
        for incident_id, known in self._labels.items():
            if known == label:
                return incident_id
        raise KeyError(f"no incident {label} has appeared yet")

    # -- playing

    def play(self, *steps: Step) -> None:
        """Run every step in order, then compare the whole timeline with the expected one;
        an action that raises stops the play and is shown in the timeline."""
        times = [ms(s.when) for s in steps]
        if times != sorted(times):
            raise ValueError("timeline steps must be in time order")
        played: list[tuple[list[str], list[str], list[str]]] = []  # header, expected, actual
        for step, now in zip(steps, times, strict=True):
            if not self._started:
                self.gateway.health.start(now)  # as the service does when it starts
                self._started = True
            raised = None
            try:
                actual = self._observed(step, now, self._run_actions(step.actions, now))
            except Exception as exc:
                raised = exc
                actual = [f"    raised   {type(exc).__name__}: {exc}"]
            played.append((_header(step.when, step.actions), step.expected_lines(), actual))
            if raised is not None:
                break
        unplayed = [(_header(s.when, s.actions), s.expected_lines()) for s in steps[len(played) :]]
        if unplayed or any(expected != actual for _, expected, actual in played):
            raise AssertionError(_difference(played, unplayed))

    def _run_actions(self, actions: Sequence[Action], now: int) -> list[str]:
        """Run the actions (adjacent readings as one batch); their own result lines."""
        results: list[str] = []
        batch: list[Reading] = []
        for action in actions:
            if isinstance(action, _Reading):
                batch.append(action.reading(self, now))
                continue
            if batch:
                self.readings(batch, now)
                batch = []
            results += action.apply(self, now) or []
        if batch:
            self.readings(batch, now)
        return results

    def _observed(self, step: Step, now: int, results: list[str]) -> list[str]:
        lines = list(results)
        for key, state, ts, incident_id, held_by in self._new_alerts():
            lines.append(_alert_line(key, state, ts, self._label(incident_id), held_by, now))
        for body in self._new_commands():
            cmd = json.loads(body)
            label = self._label(cmd["incident_id"])
            number = cmd["command_id"].removeprefix(cmd["incident_id"] + "/")
            shown_id = f"{label}/{number}" if number != cmd["command_id"] else cmd["command_id"]
            a = cmd["alert"]
            lines.append(_command_line(shown_id, cmd["kind"], cmd["priority"], a["key"],
                                       a["state"], a["ts"], now))  # fmt: skip
        lines += [f"    refused  {device} {reason}" for device, reason in self._new_refusals()]
        if step.incidents is not None:
            lines += self._incident_lines() or ["    incident (none)"]
        return lines

    def _new_alerts(self) -> list[tuple]:
        held = "held_by" if self._held_column else "NULL"
        rows = self.conn.execute(
            f"SELECT id, alert_key, state, ts, incident_id, {held} FROM alerts"
            " WHERE id > ? ORDER BY id",
            (self._cursor.alert_id,),
        ).fetchall()
        if rows:
            self._cursor.alert_id = rows[-1][0]
        return [row[1:] for row in rows]

    def _new_commands(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT seq, body FROM outbox WHERE seq > ? ORDER BY seq", (self._cursor.outbox_seq,)
        ).fetchall()
        if rows:
            self._cursor.outbox_seq = rows[-1][0]
        return [body for _, body in rows]

    def _new_refusals(self) -> list[tuple[str, str]]:
        rows = self.conn.execute(
            "SELECT id, device_id, reason FROM dead_letters WHERE id > ? ORDER BY id",
            (self._cursor.dead_letter_id,),
        ).fetchall()
        if rows:
            self._cursor.dead_letter_id = rows[-1][0]
        return [(device_id, reason) for _, device_id, reason in rows]

    def _incident_lines(self) -> list[str]:
        """Every incident in the store, in label order (unseen ones labelled by opening)."""
        rows = self.conn.execute("SELECT value FROM state WHERE ns = 'incident'").fetchall()
        incidents = sorted((json.loads(v) for (v,) in rows), key=itemgetter("opened_ts", "id"))
        labelled = sorted((int(self._label(i["id"])[1:]), i) for i in incidents)
        return [
            _incident_line(f"#{n}", i["status"], i["priority"], i["class_code"], i["alert_keys"])
            for n, i in labelled
        ]

    def _label(self, incident_id: str | None) -> str | None:
        if incident_id is None:
            return None
        if incident_id not in self._labels:
            self._labels[incident_id] = f"#{len(self._labels) + 1}"
        return self._labels[incident_id]


def _difference(
    played: list[tuple[list[str], list[str], list[str]]],
    unplayed: list[tuple[list[str], list[str]]],
) -> str:
    """The whole timeline, step by step: each step's header, then its outputs marked
    ``-`` (expected, not written) and ``+`` (written, not expected); steps after one that
    raised are shown as not played."""
    lines = ["the timeline differs (- expected, + actual):"]
    for header, expected, actual in played:
        lines += [f" {line}" for line in header]
        matcher = difflib.SequenceMatcher(a=expected, b=actual, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                lines += [f" {line}" for line in expected[i1:i2]]
                continue
            lines += [f"-{line}" for line in expected[i1:i2]]
            lines += [f"+{line}" for line in actual[j1:j2]]
    for header, expected in unplayed:
        lines += [f"-{line}  (not played)" for line in header[:1]] + [f"-{h}" for h in header[1:]]
        lines += [f"-{line}" for line in expected]
    return "\n".join(lines)
