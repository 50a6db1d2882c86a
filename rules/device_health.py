"""Device health: a dead sensor is found, a flat battery is reported, a lying one is muted.

Three maintenance problems per device, each its own alert key and, because they are about
one device, never merged with a neighbour's (``Alert.merge = False``):

- ``offline``: nothing received for ``heartbeat_s × offline_factor`` of the gateway's own
  clock (device clocks drift; silence is measured where it is observed), or ``lwt_grace_s``
  after the device's Last Will said "offline". Covers use their part's 异常 class, other
  kinds the configured maintenance class. The next reading clears it.
- ``battery_low``: battery below ``battery_low_pct``, cleared above ``battery_clear_pct``.
- ``suspect``: a field that always jitters has read exactly the same value for
  ``stuck_after_s`` of event time (a frozen sensor), or changed faster than physics allows
  since the last plausible value. While suspect, the device's readings are stored but not
  given to its business rules, so a lying gauge files a maintenance case instead of a
  flood. One implausible sample (a leaf on the probe) is only muted; the maintenance case
  is filed once ``implausible_to_report`` come in a row. A stuck device is believed again
  when the value moves; a jumpy one after ``plausible_to_clear`` plausible readings in a
  row.

State per device is plain JSON in :class:`KeyedStates`, committed with the batch that
changed it, like every other rule state — but only when a flag changed, or at most once a
``SAVE_EVERY_MS`` per device otherwise: the silence clock and the plausibility anchors move
with every reading, and committing them each time doubled the store's writes for nothing
(a restart restarts every silence clock anyway, and anchors a minute old still judge the
next reading correctly).

Params come from a :class:`RuleSettings` (the kind's health params, a device's
``heartbeat_s``) and change with ``reconfigure``. Carry-over: every flag and anchor is
kept and judged by the new params from then on — a new heartbeat at the next ``tick``, a
new battery clear level at the next battery reading, new stuck/jump limits at the next
reading. A suspect device whose field is no longer judged is believed again at its next
reading(s), like one whose readings became plausible, so its alert clears through the
normal path.

Logs: a device going offline or suspect, and back, is one INFO line with ``device_id`` in
``extra`` (battery is left to the alert). A replay (the backtest) passes
``log_changes=False``: its changes are a preview, not events.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from domain import Alert, AlertState, Location, Priority, Reading
from rules.keyed_state import KeyedStates
from rules.params import KindHealthParams
from rules.settings import RuleSettings, device_health_params

log = logging.getLogger(__name__)

COVER_CLASS_PREFIX = "010"  # 01001–01023: "<cover> 异常"
SAVE_EVERY_MS = 60_000
_flags = itemgetter("offline", "battery_low", "suspect", "reported")


@dataclass(frozen=True, slots=True)
class WatchedDevice:
    """A registered device as health judges it: read by the backtest, which skips the
    per-reading path for a device whose readings it can prove are never suspect."""

    kind: str
    location: Location
    part_code: str
    params: KindHealthParams
    offline_class: str
    judged: bool  # some field is checked for being stuck or jumping (else skip that work)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What health made of one reading: may the business rules see it, and what changed."""

    trusted: bool
    alerts: list[Alert]


def initial_state() -> dict[str, Any]:
    return {
        "last_seen_ms": None,  # gateway clock
        "lwt_offline_ms": None,
        "offline": False,
        "battery_low": False,
        "suspect": None,  # None | "stuck:<field>" | "jump:<field>"
        "reported": False,  # whether the suspect maintenance alert has fired
        "implausible_run": 0,
        "plausible_run": 0,
        "last_plausible": {},  # field → [ts, value]
        "same_since": {},  # field → [ts, value]
    }


class DeviceHealth:
    def __init__(self, settings: RuleSettings, *, log_changes: bool = True) -> None:
        """Health params from ``settings`` (``kinds.health`` and the devices' own)."""
        self._log_changes = log_changes
        self._settings = settings
        self._config = settings.kinds.health
        self._devices: dict[str, WatchedDevice] = {}
        self.states = KeyedStates()

    def add_device(
        self,
        device_id: str,
        kind: str,
        location: Location,
        part_code: str = "",
    ) -> None:
        """Register a device; a ``heartbeat_s`` in its ``settings.devices`` overrides its
        kind's."""
        self._devices[device_id] = self._build(device_id, kind, location, part_code)

    def device(self, device_id: str) -> WatchedDevice | None:
        """How a registered device is judged (None for an unknown one). Its params are
        the ones health runs with: read them, never change them."""
        return self._devices.get(device_id)

    def reconfigure(self, settings: RuleSettings) -> None:
        """Apply a new settings version (between batches); see the module docstring. All
        or nothing: a device that cannot be built raises before anything changed."""
        old = self._settings
        self._settings = settings
        try:
            rebuilt = {
                device_id: self._build(device_id, d.kind, d.location, d.part_code)
                for device_id, d in self._devices.items()
            }
        except ValueError:
            self._settings = old
            raise
        self._config = settings.kinds.health
        self._devices = rebuilt

    def _build(
        self, device_id: str, kind: str, location: Location, part_code: str
    ) -> WatchedDevice:
        params = device_health_params(self._settings, device_id, kind)
        part_class = part_code[6:11] if len(part_code) == 17 else ""
        offline_class = (
            part_class
            if part_class.startswith(COVER_CLASS_PREFIX)
            else self._settings.kinds.health.maintenance_class
        )
        judged = bool(params.stuck_after_s or params.max_change_per_min)
        return WatchedDevice(kind, location, part_code, params, offline_class, judged)

    def start(self, now_ms: int) -> None:
        """Restart every silence clock at gateway start: the gateway's own downtime is not
        the devices' silence (nothing could be heard), and a fresh gateway does not declare
        its whole fleet offline before each device had a chance to report. A device already
        offline stays offline until it reports."""
        for device_id in self._devices:
            state = self._state(device_id)
            state["last_seen_ms"] = max(state["last_seen_ms"] or 0, now_ms)
            self.states.touch(device_id)

    def check(self, reading: Reading, now_ms: int) -> Verdict:
        device = self._devices.get(reading.device_id)
        if device is None:
            return Verdict(True, [])
        state = self._state(reading.device_id)
        flags = _flags(state)
        alerts: list[Alert] = []
        state["last_seen_ms"] = now_ms
        state["lwt_offline_ms"] = None
        if state["offline"]:
            state["offline"] = False
            self._logged(reading.device_id, "online again: a reading came")
            alerts.append(self._alert(reading.device_id, "offline", AlertState.CLEARED,
                                      reading.ts, "reporting again", reading.values))  # fmt: skip
        if "battery_pct" in reading.values:
            alerts.extend(self._battery(reading, device, state))
        if device.judged or state["suspect"] is not None:
            alerts.extend(self._plausibility(reading, device, state))
        if flags != _flags(state) or now_ms - state.get("saved_ms", 0) >= SAVE_EVERY_MS:
            state["saved_ms"] = now_ms
            self.states.touch(reading.device_id)
        return Verdict(state["suspect"] is None, alerts)

    def status(self, device_id: str, online: bool, now_ms: int) -> None:
        """The device's status topic (its Last Will when it drops off)."""
        if device_id not in self._devices:
            return
        state = self._state(device_id)
        state["lwt_offline_ms"] = None if online else now_ms
        if online:
            state["last_seen_ms"] = now_ms
        self.states.touch(device_id)

    def tick(self, now_ms: int) -> list[Alert]:
        """Devices that went silent: called on a timer, not by readings (there are none)."""
        alerts = []
        for device_id, device in self._devices.items():
            state = self._state(device_id)
            if state["offline"] or state["last_seen_ms"] is None:
                continue
            silent_ms = device.params.heartbeat_s * device.params.offline_factor * 1000
            deadline = state["last_seen_ms"] + silent_ms
            if state["lwt_offline_ms"] is not None:
                grace_ms = self._config.lwt_grace_s * 1000
                deadline = min(deadline, state["lwt_offline_ms"] + grace_ms)
            if now_ms < deadline:
                continue
            state["offline"] = True
            self.states.touch(device_id)
            quiet_s = (now_ms - state["last_seen_ms"]) / 1000
            why = "its Last Will said offline" if state["lwt_offline_ms"] else "no reading"
            self._logged(device_id, f"offline: {why}, silent {quiet_s:.0f} s")
            alerts.append(self._alert(device_id, "offline", AlertState.FIRING, now_ms,
                                      f"offline: {why}, silent {quiet_s:.0f} s"))  # fmt: skip
        return alerts

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per-device health for the API: what an operator checks before trusting a case."""
        shown = {}
        for device_id in self._devices:
            state = self._state(device_id)
            shown[device_id] = {
                "offline": bool(state["offline"]),
                "battery_low": bool(state["battery_low"]),
                "suspect": state["suspect"],
                "last_seen_ms": state["last_seen_ms"],
            }
        return shown

    def _battery(self, reading: Reading, device: WatchedDevice, state: dict) -> list[Alert]:
        battery = reading.values.get("battery_pct")
        if not isinstance(battery, int | float) or isinstance(battery, bool):
            return []
        p = device.params
        if not state["battery_low"] and battery < p.battery_low_pct:
            state["battery_low"] = True
            return [self.battery_alert(reading, AlertState.FIRING)]
        if state["battery_low"] and battery >= p.battery_clear_pct:
            state["battery_low"] = False
            return [self.battery_alert(reading, AlertState.CLEARED)]
        return []

    def battery_alert(self, reading: Reading, state: AlertState) -> Alert:
        """The ``battery_low`` alert health emits when the reading's device (registered,
        the reading holding a numeric ``battery_pct``) goes low (FIRING) or recovers
        (CLEARED) at ``reading``: one place for its fields and summary, shared with the
        backtest's column-wise replay. Raises KeyError for an unknown device."""
        battery = reading.values["battery_pct"]
        if state is AlertState.FIRING:
            low_pct = self._devices[reading.device_id].params.battery_low_pct
            summary = f"battery {battery:g}% < {low_pct:g}%"
        else:
            summary = f"battery {battery:g}%"
        return self._alert(reading.device_id, "battery_low", state, reading.ts, summary,
                           reading.values)  # fmt: skip

    def _plausibility(self, reading: Reading, device: WatchedDevice, state: dict) -> list[Alert]:
        problem = self._stuck(reading, device, state) or self._jump(reading, device, state)
        if problem is not None:
            state["plausible_run"] = 0
            state["implausible_run"] += 1
            if state["suspect"] is None:
                state["suspect"] = problem[0]
                self._logged(reading.device_id, f"suspect: {problem[1]}")
            stuck = problem[0].startswith("stuck:")
            due = stuck or state["implausible_run"] >= self._config.implausible_to_report
            if due and not state["reported"]:
                state["reported"] = True
                return [self._alert(reading.device_id, "suspect", AlertState.FIRING, reading.ts,
                                    problem[1], reading.values)]  # fmt: skip
            return []
        was = state["suspect"]
        state["implausible_run"] = 0
        if was is None:
            return []
        state["plausible_run"] += 1
        believed = was.startswith("stuck:") or (
            state["plausible_run"] >= self._config.plausible_to_clear
        )
        if not believed:
            return []
        reported = state["reported"]
        state.update(suspect=None, plausible_run=0, reported=False)
        self._logged(reading.device_id, "believed again: readings plausible")
        if not reported:
            return []
        return [self._alert(reading.device_id, "suspect", AlertState.CLEARED, reading.ts,
                            "readings plausible again", reading.values)]  # fmt: skip

    def _stuck(
        self, reading: Reading, device: WatchedDevice, state: dict
    ) -> tuple[str, str] | None:
        found = None
        for name, after_s in device.params.stuck_after_s.items():
            value = reading.values.get(name)
            if value is None:
                continue
            same = state["same_since"].get(name)
            if same is None or same[1] != value:
                state["same_since"][name] = [reading.ts, value]
                continue
            held_s = (reading.ts - same[0]) / 1000
            if held_s >= after_s and found is None:
                found = (f"stuck:{name}", f"{name} stuck at {value:g} for {held_s / 3600:.1f} h")
        return found

    def _jump(self, reading: Reading, device: WatchedDevice, state: dict) -> tuple[str, str] | None:
        found = None
        for name, per_min in device.params.max_change_per_min.items():
            value = reading.values.get(name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            last = state["last_plausible"].get(name)
            if last is None:
                state["last_plausible"][name] = [reading.ts, value]
                continue
            minutes = max(reading.ts - last[0], 0) / 60_000
            allowed = per_min * minutes + device.params.change_slack.get(name, 0.0)
            if abs(value - last[1]) <= allowed:
                state["last_plausible"][name] = [reading.ts, value]
            elif found is None:
                found = (
                    f"jump:{name}",
                    f"{name} {last[1]:g} → {value:g} in {minutes * 60:.0f} s "
                    f"(at most {allowed:g} possible)",
                )
        return found

    def _logged(self, device_id: str, change: str) -> None:
        if self._log_changes:
            log.info("device %s %s", device_id, change, extra={"device_id": device_id})

    def _alert(
        self,
        device_id: str,
        rule_id: str,
        state: AlertState,
        ts: int,
        summary: str,
        values: dict | None = None,
    ) -> Alert:
        device = self._devices[device_id]
        if rule_id == "offline":
            class_code, priority = device.offline_class, Priority.NORMAL
        elif rule_id == "battery_low":
            class_code, priority = self._config.maintenance_class, Priority.LOW
        else:
            class_code, priority = self._config.maintenance_class, Priority.NORMAL
        return Alert(
            key=f"{device_id}/health/{rule_id}",
            source_id=device_id,
            rule_id=rule_id,
            state=state,
            class_code=class_code,
            priority=priority,
            location=device.location,
            ts=ts,
            values=dict(values or {}),
            part_code=device.part_code,
            summary=f"{device_id} {summary}",
            merge=False,
            kind=device.kind,
        )

    def _state(self, device_id: str) -> dict[str, Any]:
        return self.states.get(device_id, initial_state)
