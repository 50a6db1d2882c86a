"""Backtest: what would a proposed threshold change have filed over a stored window?

The stored readings of the selected devices are replayed (``rules/backtest``) twice — with
the current settings (the store's latest threshold version, else the config's version 1)
and with the proposed ones (the current plus ``--set`` changes, validated exactly as a
live change) — each through fresh engines, the alert flow with the silences the store
kept, and an incident book. Offline alerts (the live gateway makes them on its wall clock,
from silence, not from readings) and camera alerts are taken from the stored alerts table
as recorded events and enter both runs alike.

The report compares the cases: per class and grid, the ones only the proposal files
(added) and the ones it no longer files (removed); a case of one run *matches* one of the
other when both were opened by the same alert key and their open spans overlap, and for
matched cases the time to detect is the difference of their opening times (negative:
the proposal files earlier). See ``rules/backtest/replay.py`` for the warm-up and for how
case closures are modelled.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from case_bridge.dispatch import CaseDispatch
from devices.registry import Device, load_registry
from domain import Alert, AlertState
from gateway.backtest_shards import VersionAlerts, replay_devices
from gateway.backtest_store import load_series, open_read_only
from gateway.rule_settings import settings_from_files
from gateway.silences import overlapping
from rules.alerting import AlertingConfig
from rules.backtest.replay import Case, RunResult, run_flow
from rules.backtest.series import DeviceInfo, DeviceSeries
from rules.engine import RuleEngine
from rules.flow import AlertFlow
from rules.incidents import IncidentBook
from rules.merge_settings import MergeSettings
from rules.settings import RuleSettings, apply_changes, diff
from rules.silences import Silence

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

MAX_WINDOW_MS = 31 * 86_400_000
MAX_WARM_UP_MS = 7 * 86_400_000
DEFAULT_WARM_UP_MS = 86_400_000
MAX_DEVICES = 20_000
MAX_LISTED_CASES = 500  # added/removed cases listed one by one in the report
SUMMARY_GRIDS = 10  # grids whose case count changed most, in the printed summary

Progress = Callable[[str, int, int], None]  # stage, done, total


class BacktestError(ValueError):
    """A request the backtest cannot run; the message names the field."""


@dataclass(frozen=True, slots=True)
class BacktestRequest:
    since_ms: int
    until_ms: int
    changes: Mapping[str, Any]
    devices: Sequence[str] = ()
    grids: Sequence[str] = ()
    warm_up_ms: int = DEFAULT_WARM_UP_MS

    def check(self) -> None:
        if self.until_ms <= self.since_ms:
            raise BacktestError("until_ms: must be after since_ms")
        if self.until_ms - self.since_ms > MAX_WINDOW_MS:
            raise BacktestError(f"until_ms: a window is at most {MAX_WINDOW_MS // 86_400_000} days")
        if not 0 <= self.warm_up_ms <= MAX_WARM_UP_MS:
            raise BacktestError(f"warm_up_s: 0 to {MAX_WARM_UP_MS // 1000} s")
        if len(self.devices) > MAX_DEVICES or len(self.grids) > MAX_DEVICES:
            raise BacktestError(f"devices: at most {MAX_DEVICES}")


@dataclass(slots=True)
class Backtest:
    """Everything a backtest needs from the gateway: where the store is, who the devices
    are, and the parts of the config the replay runs with."""

    store_path: Path
    registry: Mapping[str, Device]
    config_settings: RuleSettings  # version 1, used when the store holds no version
    tz: tzinfo
    merge: MergeSettings  # families, duplicate cut-offs and storms as the live gateway's
    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    # Grids, class priorities (case_bridge/dispatch.py): the live gateway judges every alert
    # with them before its incidents do, so a replay must too (None: alerts as the rules made
    # them, for callers without a config).
    dispatch: CaseDispatch | None = None

    def run(
        self,
        request: BacktestRequest,
        progress: Progress | None = None,
        out_dir: Path | None = None,
    ) -> dict[str, Any]:
        """The report (plain JSON but for ``settings``); with ``out_dir``, also written
        there as report.json, summary.txt and a PNG per device class."""
        request.check()
        started = time.monotonic()
        selected = self._select(request)
        with contextlib.closing(open_read_only(self.store_path)) as conn:
            current = _current_settings(conn, self.config_settings)
            proposed = self._proposed(current, request.changes)
            start_ms = request.since_ms - request.warm_up_ms
            recorded = _recorded_events(conn, start_ms, request.until_ms, selected)
            silences = _silences(conn, start_ms, request.until_ms)
        done = [0]

        def replayed(rows: int) -> None:
            done[0] += rows
            if progress:
                progress("replay", done[0], 0)

        versions = (current, proposed)
        replayed_alerts = replay_devices(
            self.store_path, selected, start_ms, request.until_ms, versions, self.tz, replayed
        )
        readings = replayed_alerts.readings
        runs = {}
        for name, settings, alerts in zip(
            ("current", "proposed"), versions, replayed_alerts.versions, strict=True
        ):
            runs[name] = self._flow(settings, alerts, recorded, silences, request)
        report = compare(runs["current"], runs["proposed"], request)
        report["changes"] = diff(current, proposed)
        report["replay"] = {
            "readings": sum(readings.values()),
            "devices": len(readings),
            "total_s": round(time.monotonic() - started, 3),
            "fast_devices": runs["proposed"].fast_devices,
            "scalar_devices": runs["proposed"].scalar_devices,
        }
        if out_dir is not None:
            settings = {"current": current, "proposed": proposed}

            def load(chosen: list[str]) -> dict[str, DeviceSeries]:
                wanted = {d: selected[d] for d in chosen}
                return load_series(self.store_path, wanted, start_ms, request.until_ms)

            # matplotlib only when charts are drawn: every replay worker process imports
            # this module, and matplotlib would add a third of a second to each start.
            from gateway.backtest_charts import draw_charts

            charts = draw_charts(out_dir, selected, readings, runs, settings, report, load)
            report["charts"] = [path.name for path in charts]
            (out_dir / "report.json").write_text(report_json(report, settings), encoding="utf-8")
            (out_dir / "summary.txt").write_text(summary_text(report) + "\n", encoding="utf-8")
        return report

    def validate(self, request: BacktestRequest) -> None:
        """Refuse a request that cannot run (BacktestError naming the field) before any
        replay starts: the window, the selection, the changes against the current version."""
        request.check()
        self._select(request)
        with contextlib.closing(open_read_only(self.store_path)) as conn:
            self._proposed(_current_settings(conn, self.config_settings), request.changes)

    def _select(self, request: BacktestRequest) -> dict[str, DeviceInfo]:
        unknown = [d for d in request.devices if d not in self.registry]
        if unknown:
            raise BacktestError(f"devices: unknown device {unknown[0]!r}")
        chosen = request.devices or list(self.registry)
        if request.grids:
            grids = set(request.grids)
            chosen = [d for d in chosen if self.registry[d].location.grid_code in grids]
        if not chosen:
            raise BacktestError("grids: no device of the selection is in these grids")
        return {d: _info(self.registry[d]) for d in chosen}

    def _proposed(self, current: RuleSettings, changes: Mapping[str, Any]) -> RuleSettings:
        kinds = {d.device_id: d.kind for d in self.registry.values()}
        try:
            return apply_changes(current, dict(changes), kinds, current.zones.keys())
        except ValueError as exc:
            raise BacktestError(f"changes: {exc}") from None

    def _flow(
        self,
        settings: RuleSettings,
        alerts: VersionAlerts,
        recorded: list[Alert],
        silences: list[Silence],
        request: BacktestRequest,
    ) -> RunResult:
        """One version's device alerts through a fresh alert flow and incident book."""
        # Lead classes by where sources stand, as the live gateway decides them.
        engine = RuleEngine(settings, self.tz)
        for d in self.registry.values():
            engine.add_source(d.device_id, d.kind, d.location, d.part_code)
        dispatch = self.dispatch
        book = IncidentBook(
            self.merge.to_policy(),
            self.merge,
            grid_parent=dispatch.parent_of if dispatch else None,
            lead_sites=engine.class_sites(),
        )
        per_device = alerts.per_device
        if dispatch is not None:
            per_device = [[dispatch.enrich(a) for a in device] for device in per_device]
        flow = AlertFlow(
            book, self.alerting, round(settings.kinds.health.confirm_s * 1000), log_changes=False
        )
        for silence in silences:
            flow.put_silence(silence)
        ordered, handled, cases = run_flow(
            per_device, recorded, flow, book, request.since_ms, request.until_ms
        )
        fast = alerts.fast_devices
        return RunResult(ordered, handled, cases, fast, len(alerts.per_device) - fast)


def compare(current: RunResult, proposed: RunResult, request: BacktestRequest) -> dict[str, Any]:
    """The two runs' cases side by side (plain JSON)."""
    matched, removed = [], []
    by_key: dict[str, list[Case]] = {}
    for case in proposed.cases:
        by_key.setdefault(case.alert_key, []).append(case)
    for case in current.cases:
        candidates = by_key.get(case.alert_key, [])
        twin = next((p for p in candidates if _overlap(case, p, request.until_ms)), None)
        if twin is None:
            removed.append(case)
        else:
            candidates.remove(twin)
            matched.append((case, twin))
    paired = {id(p) for _, p in matched}
    added = [p for p in proposed.cases if id(p) not in paired]
    deltas = [(p.opened_ms - c.opened_ms) / 1000 for c, p in matched]
    return {
        "window": {
            "since_ms": request.since_ms,
            "until_ms": request.until_ms,
            "warm_up_s": request.warm_up_ms / 1000,
        },
        "current": _summary(current),
        "proposed": _summary(proposed),
        "added": _listed(added),
        "removed": _listed(removed),
        "added_by_class": dict(Counter(c.class_code for c in added)),
        "removed_by_class": dict(Counter(c.class_code for c in removed)),
        "added_by_grid": dict(Counter(c.grid_code for c in added)),
        "removed_by_grid": dict(Counter(c.grid_code for c in removed)),
        "time_to_detect": {
            "matched": len(matched),
            "earlier": sum(1 for d in deltas if d < 0),
            "later": sum(1 for d in deltas if d > 0),
            "mean_delta_s": round(statistics.fmean(deltas), 3) if deltas else None,
            "median_delta_s": statistics.median(deltas) if deltas else None,
        },
    }


def _overlap(a: Case, b: Case, until_ms: int) -> bool:
    a_end = a.closed_ms if a.closed_ms is not None else until_ms
    b_end = b.closed_ms if b.closed_ms is not None else until_ms
    return a.opened_ms <= b_end and b.opened_ms <= a_end


def _summary(run: RunResult) -> dict[str, Any]:
    return {
        "cases": len(run.cases),
        "by_class": dict(Counter(c.class_code for c in run.cases)),
        "by_grid": dict(Counter(c.grid_code for c in run.cases)),
        "alerts": len(run.alerts),
    }


def _listed(cases: list[Case]) -> list[dict[str, Any]]:
    return [
        {
            "incident_id": c.incident_id,
            "alert_key": c.alert_key,
            "class": c.class_code,
            "grid": c.grid_code,
            "kind": c.kind,
            "opened_ms": c.opened_ms,
            "closed_ms": c.closed_ms,
            "priority": c.priority,
        }
        for c in cases[:MAX_LISTED_CASES]
    ]


def summary_text(report: dict[str, Any]) -> str:
    """The report as an operator reads it in a terminal."""
    cur, new, detect = report["current"], report["proposed"], report["time_to_detect"]
    lines = [
        f"readings replayed: {report['replay']['readings']:,} of "
        f"{report['replay']['devices']:,} devices in {report['replay']['total_s']:.1f} s",
        "changes: "
        + (", ".join(f"{c['path']}: {c['old']} → {c['new']}" for c in report["changes"]) or "none"),
        f"cases: current {cur['cases']}, proposed {new['cases']} "
        f"(+{len(report['added'])} added, -{len(report['removed'])} removed)",
    ]
    for cls in sorted(set(cur["by_class"]) | set(new["by_class"])):
        lines.append(
            f"  class {cls}: {cur['by_class'].get(cls, 0)} → {new['by_class'].get(cls, 0)}"
        )
    grids = set(cur["by_grid"]) | set(new["by_grid"])
    changed = sorted(
        (g for g in grids if cur["by_grid"].get(g, 0) != new["by_grid"].get(g, 0)),
        key=lambda g: (-abs(new["by_grid"].get(g, 0) - cur["by_grid"].get(g, 0)), g),
    )
    for grid in changed[:SUMMARY_GRIDS]:
        lines.append(
            f"  grid {grid or '-'}: {cur['by_grid'].get(grid, 0)} → {new['by_grid'].get(grid, 0)}"
        )
    if len(changed) > SUMMARY_GRIDS:
        lines.append(f"  … {len(changed) - SUMMARY_GRIDS} more grids changed (report.json)")
    if detect["matched"]:
        lines.append(
            f"time to detect, {detect['matched']} cases in both: {detect['earlier']} earlier, "
            f"{detect['later']} later, median {detect['median_delta_s']:+g} s"
        )
    return "\n".join(lines)


def report_json(report: dict[str, Any], settings: Mapping[str, RuleSettings]) -> str:
    """The report with both settings versions in full, for the file beside the charts."""
    shown = {**report, "settings": {k: v.model_dump(mode="json") for k, v in settings.items()}}
    return json.dumps(shown, ensure_ascii=False, indent=2)


def _info(device: Device) -> DeviceInfo:
    return DeviceInfo(device.device_id, device.kind, device.location, device.part_code)


def _current_settings(conn: sqlite3.Connection, fallback: RuleSettings) -> RuleSettings:
    """The latest threshold version the store holds (what the live gateway runs with)."""
    try:
        row = conn.execute(
            "SELECT settings_json FROM threshold_versions ORDER BY version DESC LIMIT 1"
        ).fetchone()
    except sqlite3.OperationalError:  # a store from before threshold versions
        return fallback
    return RuleSettings.model_validate_json(row[0]) if row else fallback


def _recorded_events(
    conn: sqlite3.Connection, since_ms: int, until_ms: int, devices: Mapping[str, DeviceInfo]
) -> list[Alert]:
    """Stored offline and camera alerts in the window: events no reading produces (the
    rows the flow wrote when it released a held one are not events: see ``_events``)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(alerts)")}
    held = "held_by" if "held_by" in columns else "NULL"  # a store from before holding
    rows = conn.execute(
        f"SELECT body, {held} FROM alerts WHERE ts BETWEEN ? AND ?"
        " AND (alert_key LIKE '%/health/offline' OR json_extract(body, '$.origin') = 'video'"
        " OR json_extract(body, '$.kind') = 'camera') ORDER BY id",
        (since_ms, until_ms),
    )
    alerts = _events((Alert.from_dict(json.loads(body)), held_by) for body, held_by in rows)
    grids = {d.location.grid_code for d in devices.values()}
    return [
        a for a in alerts
        if a.source_id in devices or ((a.origin == "video" or a.kind == "camera")
        and a.location.grid_code in grids)
    ]  # fmt: skip


def _events(rows: Iterable[tuple[Alert, str | None]]) -> list[Alert]:
    """The alerts an engine made, of the stored rows (alert, held_by) in write order.
    When the flow releases a held alert (its silence or confirmation ended) it stores the
    held alert's latest version again, stamped with the release time and not held: the
    replay's own flow releases it from the held row, so that row is dropped. It is the
    first unheld row of the key after a held one, equal to it but for ``ts`` (an alert the
    engine made afresh — an escalation, a clear — differs in more)."""
    holding: dict[str, Alert] = {}  # key → its latest held version
    out = []
    for alert, held_by in rows:
        was = holding.pop(alert.key, None)
        if held_by is not None and alert.state is not AlertState.CLEARED:
            holding[alert.key] = alert
        elif was is not None and replace(alert, ts=was.ts) == was:
            continue
        out.append(alert)
    return out


def _silences(conn: sqlite3.Connection, since_ms: int, until_ms: int) -> list[Silence]:
    """Every silence in force at some time of the window (none in a store from before)."""
    try:
        return list(overlapping(conn, since_ms, until_ms + 1))
    except sqlite3.OperationalError:
        return []


def backtest_from_config(config: GatewayConfig) -> Backtest:
    """The backtest of the gateway this config describes (its store, registry, rules)."""
    registry = load_registry(config.devices.registry)
    version_1 = settings_from_files(config, registry)
    return Backtest(
        config.store.path,
        registry,
        version_1,
        config.tz,
        config.merge,
        config.alerting,
        config.dispatch(),
    )
