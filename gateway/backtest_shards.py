"""Load and replay a selection's devices in worker processes, one share of them each.

Loading is most of a backtest's time (SQLite's ``json_extract`` over every row, in one
thread), and a device's alerts depend only on its own readings (``rules/backtest``), so the
selected devices are cut into one share per core — contiguous ranges of sorted device ids,
which a table scan tests with one string comparison per row — and each worker process
opens the store read-only, reads only its share's rows, runs the health and rule engines
of every settings version over them and hands back only the alerts. The alert flow, which
sees every device, stays in the caller.

Workers start from the ``forkserver`` context (``spawn`` where there is none): the gateway
has threads, and ``fork`` in a process with threads can copy a lock held by another
thread. Starting them costs about a second, so a small selection (few devices or few
rows) is loaded and replayed in the calling process, with the same functions, giving the
same alerts.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any

from domain import Alert
from gateway.backtest_store import INDEX_READ_DEVICES, load_series, open_read_only
from rules.backtest.replay import build_engines, device_alerts
from rules.backtest.series import DeviceInfo, DeviceSeries
from rules.settings import RuleSettings

# Below this many rows in the table (or selected devices), worker start-up would cost more
# than the second core gives back.
PARALLEL_MIN_ROWS = 1_000_000
PROGRESS_POLL_S = 0.2

Progress = Callable[[int], None]  # readings loaded, or replayed by one version, since last


@dataclass(slots=True)
class VersionAlerts:
    """One settings version's alerts: per device, in the selection's order."""

    per_device: list[list[Alert]]
    fast_devices: int


@dataclass(slots=True)
class Replayed:
    versions: list[VersionAlerts]  # in the order the versions were given
    readings: dict[str, int]  # per device, in the selection's order


def replay_devices(
    path: Path,
    devices: Mapping[str, DeviceInfo],
    since_ms: int,
    until_ms: int,
    versions: Sequence[RuleSettings],
    tz: tzinfo,
    progress: Progress | None = None,
    workers: int | None = None,
) -> Replayed:
    """Every selected device's alerts under each settings version over the window.
    ``workers``: processes to use (1: this process); by default one per core where the
    selection is large enough to gain from them, else this process."""
    if workers is None:
        large = len(devices) > INDEX_READ_DEVICES and _rows(path) >= PARALLEL_MIN_ROWS
        workers = len(os.sched_getaffinity(0)) if large else 1
    if workers > 1 and len(devices) > 1:
        return _in_workers(path, devices, since_ms, until_ms, versions, tz, progress, workers)
    series = load_series(path, devices, since_ms, until_ms, progress)
    return _replay(series, versions, tz, progress)


def _rows(path: Path) -> int:
    """The readings table's rowid span: its size, cheaply (rowids are dense)."""
    conn = open_read_only(path)
    try:
        low, high = conn.execute("SELECT min(rowid), max(rowid) FROM readings").fetchone()
    finally:
        conn.close()
    return 0 if low is None else high - low + 1


def _replay(
    series: Mapping[str, DeviceSeries],
    versions: Sequence[RuleSettings],
    tz: tzinfo,
    progress: Progress | None,
) -> Replayed:
    out = []
    for settings in versions:
        health, engine = build_engines(settings, [s.device for s in series.values()], tz)
        per_device, fast = device_alerts(series.values(), health, engine, True, progress)
        out.append(VersionAlerts(per_device, fast))
    return Replayed(out, {device_id: len(s) for device_id, s in series.items()})


def _shares(device_ids: Sequence[str], count: int) -> list[tuple[list[str], tuple]]:
    """``count`` contiguous ranges of the sorted ids, equal in devices, with the id range
    each covers (the last one unbounded above)."""
    ordered = sorted(device_ids)
    size = -(-len(ordered) // count)
    chunks = [ordered[i : i + size] for i in range(0, len(ordered), size)]
    out = []
    for n, chunk in enumerate(chunks):
        high = chunks[n + 1][0] if n + 1 < len(chunks) else None
        out.append((chunk, (chunk[0], high)))
    return out


def _in_workers(
    path: Path,
    devices: Mapping[str, DeviceInfo],
    since_ms: int,
    until_ms: int,
    versions: Sequence[RuleSettings],
    tz: tzinfo,
    progress: Progress | None,
    workers: int,
) -> Replayed:
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    reports = context.Queue()
    shares = _shares(list(devices), workers)
    results: dict[int, Replayed] = {}
    with ProcessPoolExecutor(len(shares), context, _start_worker, (reports,)) as pool:
        pending = {
            pool.submit(_replay_share, path, {d: devices[d] for d in ids}, since_ms, until_ms,
                        list(versions), tz, id_range): n
            for n, (ids, id_range) in enumerate(shares)
        }  # fmt: skip
        reported = 0
        while pending:
            finished, _ = wait(pending, PROGRESS_POLL_S, FIRST_COMPLETED)
            rows = _drain(reports)
            reported += rows
            if progress and rows:
                progress(rows)
            for future in finished:
                results[pending.pop(future)] = future.result()
    # A worker's last reports can still be in its queue's feeder thread when its result
    # arrives: top the figure up from the results (each reading loaded, then replayed once
    # per version), so that progress always adds up to the whole.
    done = sum(sum(r.readings.values()) for r in results.values()) * (1 + len(versions))
    if progress and done > reported:
        progress(done - reported)
    return _merge(list(devices), [results[n] for n in range(len(shares))], len(versions))


def _drain(reports: Any) -> int:
    rows = 0
    while True:
        try:
            rows += reports.get_nowait()
        except queue.Empty:
            return rows


def _merge(order: list[str], parts: list[Replayed], version_count: int) -> Replayed:
    """The shares' results put back in the selection's order (the flow's tie-break)."""
    alerts: dict[str, list[list[Alert]]] = {}
    readings: dict[str, int] = {}
    fast = [0] * version_count
    for part in parts:
        for v, version in enumerate(part.versions):
            fast[v] += version.fast_devices
            for device_id, device_alerts_ in zip(part.readings, version.per_device, strict=True):
                alerts.setdefault(device_id, []).append(device_alerts_)
        readings.update(part.readings)
    versions = [VersionAlerts([alerts[d][v] for d in order], fast[v]) for v in range(version_count)]
    return Replayed(versions, {d: readings[d] for d in order})


# -- in the worker ---------------------------------------------------------------------

_reports: Any = None


def _start_worker(reports: Any) -> None:
    global _reports
    _reports = reports


def _replay_share(
    path: Path,
    devices: dict[str, DeviceInfo],
    since_ms: int,
    until_ms: int,
    versions: list[RuleSettings],
    tz: tzinfo,
    id_range: tuple[str, str | None],
) -> Replayed:
    series = load_series(path, devices, since_ms, until_ms, _report, id_range)
    return _replay(series, versions, tz, _report)


def _report(rows: int) -> None:
    if _reports is not None:
        _reports.put(rows)
