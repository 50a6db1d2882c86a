"""Backtest benchmark: readings/s replayed, beside a bare scan of the same rows.

Fills a store with a city's week — by default 10,000 devices (half bins, 30 % manhole
covers, 20 % water gauges) reporting every 5 minutes, ~20 million readings, written by one
generated SQL statement (minutes, not hours, of executemany) in the order a live gateway
writes them (time-major) — and then, in the same run:

- **bare scan**: every row of the window handed to Python (``SELECT device_id, ts,
  values_json``), nothing else: the floor of any per-row replay;
- **one process, stage by stage**: the rows read into per-device columns
  (gateway/backtest_store.py), one settings version through the engines (fast path where
  it holds), and its alerts through the alert flow and incident book;
- **one version end to end**: what ``Backtest.run`` does per version, timed from nothing
  to the cases: one worker process per core loads its share of the devices and runs their
  engines (gateway/backtest_shards.py), then the flow; checked to give the one-process
  run's alerts and cases;
- **backtest**: ``Backtest.run`` end to end, current and proposed versions, report.

Usage: python bench/backtest.py [--devices 10000] [--days 7] [--store PATH] [--no-write]
Prints the figures and writes them into BENCHMARKS.md (section "Backtest").
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks_doc import write_section  # noqa: E402

from devices.registry import Device  # noqa: E402
from domain import Location  # noqa: E402
from gateway import store  # noqa: E402
from gateway.backtest import Backtest, BacktestRequest, summary_text  # noqa: E402
from gateway.backtest_shards import replay_devices  # noqa: E402
from gateway.backtest_store import load_series, open_read_only  # noqa: E402
from rules.backtest.replay import build_engines, device_alerts, run_flow  # noqa: E402
from rules.flow import AlertFlow  # noqa: E402
from rules.incidents import IncidentBook  # noqa: E402
from rules.merge_settings import MergeSettings  # noqa: E402
from rules.params import RulesConfig, VideoRuleParams, WaterLevelParams  # noqa: E402
from rules.settings import settings_from_config  # noqa: E402

SECTION = "## Backtest"
START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
STEP_MS = 300_000
TZ = ZoneInfo("Asia/Shanghai")
KINDS = ["water_level"] * 2 + ["manhole_cover"] * 3 + ["bin"] * 5  # by device number % 10
PREFIX = {"water_level": "WL", "manhole_cover": "MC", "bin": "BIN"}
# Per kind, a reading as SQL over the step i and device j: bins fill daily (a case a day
# each), covers tilt now and then and sometimes open, gauges see a flood every ~33 hours.
VALUES_SQL = {
    "water_level": 'printf(\'{"level_cm": %.1f, "battery_pct": %.1f}\','
    " CASE WHEN (i + j * 13) % 400 < 60 THEN 10 + ((i + j * 13) % 400) * 1.5"
    " ELSE 10.0 + (i % 7) * 0.3 END, 95.0 - (j % 97) * 0.8 - i * 0.002)",
    "manhole_cover": 'printf(\'{"tilt_deg": %.1f, "lid_open": %s, "battery_pct": 90.0}\','
    " CASE WHEN (i + j * 7) % 997 < 4 THEN 30.0 ELSE 1.0 + ((i * j) % 7) * 0.1 END,"
    " CASE WHEN (i + j * 11) % 1499 = 0 THEN 'true' ELSE 'false' END)",
    "bin": 'printf(\'{"fill_pct": %.1f, "battery_pct": 80.0}\','
    " min(100.0, ((i + j * 37) % 288) * 0.45))",
}


def registry(devices: int) -> dict[str, Device]:
    out = {}
    for j in range(devices):
        kind = KINDS[j % 10]
        device_id = f"{PREFIX[kind]}-{j:05d}"
        grid = f"350102{j // 100:09d}"
        where = Location(26.0 + (j % 100) * 0.001, 119.3 + (j // 100) * 0.001, "", grid)
        part = f"350102{'01003' if kind == 'manhole_cover' else '03005'}{j:06d}"
        out[device_id] = Device(device_id, kind, where, part)
    return out


def build_store(path: Path, devices: int, steps: int) -> None:
    """The readings table as a live gateway leaves it, made by one INSERT … SELECT."""
    conn = store.connect(path, synchronous="OFF")
    conn.execute("DROP INDEX readings_device_ts")  # built once at the end: much faster
    kind_sql = " ".join(f"WHEN {n} THEN '{PREFIX[k]}-'" for n, k in enumerate(KINDS))
    value_sql = " ".join(f"WHEN {n} THEN {VALUES_SQL[k]}" for n, k in enumerate(KINDS))
    conn.execute("BEGIN")
    conn.execute(f"""
        WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {steps - 1}),
        d(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM d WHERE j < {devices - 1})
        INSERT INTO readings (device_id, ts, seq, values_json, suspect)
        SELECT CASE j % 10 {kind_sql} END || printf('%05d', j),
               {START_MS} + i * {STEP_MS} + j, i, CASE j % 10 {value_sql} END, 0
        FROM s, d""")
    conn.execute("COMMIT")
    conn.execute("CREATE INDEX readings_device_ts ON readings(device_id, ts)")
    conn.close()


def bare_scan(path: Path, since_ms: int, until_ms: int) -> int:
    with contextlib.closing(open_read_only(path)) as conn:
        rows = conn.execute(
            "SELECT device_id, ts, values_json FROM readings WHERE ts BETWEEN ? AND ?",
            (since_ms, until_ms),
        )
        return sum(1 for _ in rows)


def flow(per_device, settings, since: int, until: int) -> tuple[int, int]:
    """One version's device alerts through the alert flow: (alerts, cases)."""
    book = IncidentBook(MergeSettings().to_policy())
    gate = AlertFlow(book, confirm_ms=round(settings.kinds.health.confirm_s * 1000))
    alerts, _, cases = run_flow(per_device, [], gate, book, since, until)
    return len(alerts), len(cases)


def stages(path: Path, infos, settings, since: int, until: int):
    """One process, stage by stage: where the time goes."""
    series, load_s = timed(lambda: load_series(path, infos, since, until))
    readings = sum(len(s) for s in series.values())
    health, engine = build_engines(settings, [s.device for s in series.values()], TZ)
    (one_process, fast), engines_s = timed(lambda: device_alerts(series.values(), health, engine))
    (alerts, cases), flow_s = timed(lambda: flow(one_process, settings, since, until))
    return readings, fast, alerts, cases, (load_s, engines_s, flow_s)


def timed(work):
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--store", default="var/bench-backtest.db", help="reused if present")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    args = parser.parse_args()
    steps = round(args.days * 86_400_000 / STEP_MS)
    path = ROOT / args.store
    fleet = registry(args.devices)
    expected = args.devices * steps
    built_s = 0.0
    if not path.exists() or store.count_rows(store.connect(path), "readings") != expected:
        path.unlink(missing_ok=True)
        _, built_s = timed(lambda: build_store(path, args.devices, steps))
    since, until = START_MS, START_MS + steps * STEP_MS

    scanned, scan_s = timed(lambda: bare_scan(path, since, until))
    infos = Backtest(path, fleet, settings_from_config(RulesConfig(), VideoRuleParams(), {}),
                     TZ, MergeSettings())._select(BacktestRequest(since, until, {}))  # fmt: skip
    rules = RulesConfig(water_level=WaterLevelParams(warning_cm=60, alarm_cm=90))
    settings = settings_from_config(rules, VideoRuleParams(), {})

    # One process, stage by stage, in a function: its arrays and alerts (~1 GB) are let go
    # before the end-to-end run, which starts from nothing.
    readings, fast, alerts, cases, (load_s, engines_s, flow_s) = stages(
        path, infos, settings, since, until
    )
    gc.collect()

    # End to end, as Backtest.run does it: load and engines in one worker per core.
    def end_to_end():
        replayed = replay_devices(path, infos, since, until, [settings], TZ)
        return flow(replayed.versions[0].per_device, settings, since, until)

    (alerts_e2e, cases_e2e), e2e_s = timed(end_to_end)
    if (alerts_e2e, cases_e2e) != (alerts, cases):
        raise SystemExit(f"workers: {alerts_e2e} alerts, {cases_e2e} cases; one process: "
                         f"{alerts}, {cases}")  # fmt: skip
    backtest = Backtest(path, fleet, settings, TZ, MergeSettings())
    change = {"bin.fill_fire_pct": "85"}
    report, backtest_s = timed(
        lambda: backtest.run(BacktestRequest(since, until, change, warm_up_ms=0))
    )

    cores = len(os.sched_getaffinity(0))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        f"{SECTION}",
        "",
        f"`bench/backtest.py` — {stamp} ({platform.machine()}, {platform.python_version()},"
        f" {cores} cores). {args.devices:,} devices × {steps:,} readings (5 min, "
        f"{args.days:g} days) = {readings:,} readings"
        + (f"; store built in {built_s:.0f} s." if built_s else "; store reused."),
        "",
        "| what | seconds | readings/s |",
        "|---|---:|---:|",
        *(f"| {what} | {seconds:.1f} | {count / seconds:,.0f} |" for what, seconds, count in (
            ("bare scan (`SELECT device_id, ts, values_json`, rows to Python)", scan_s, scanned),
            ("one process: load into per-device columns", load_s, readings),
            ("one process: health and rule engines, one version", engines_s, readings),
            ("alert flow and incident book, one version", flow_s, readings),
            (f"**one version end to end** ({cores} workers load and run the engines, "
             "then the flow)", e2e_s, readings),
            ("`Backtest.run`: current and proposed, report", backtest_s, readings),
        )),
        "",
        f"One version: {alerts:,} alerts, {cases:,} cases; fast path for {fast:,} of "
        f"{len(infos):,} devices (the rest, found stuck or jumping by health, replayed "
        "reading by reading). The proposed `bin.fill_fire_pct=85`:",
        "",
        "```",
        summary_text(report),
        "```",
        "",
    ])  # fmt: skip
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
