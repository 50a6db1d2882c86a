"""One PNG per device class: what the operator checks before accepting a change.

For the devices of a kind whose cases changed most (else the first few), one panel each:
the rule's metric over the window, the current and proposed first-stage levels, the
alert intervals of both runs as bands, and a marker where each run opened a case.
Drawn with matplotlib's Agg backend (no display; safe in a worker thread).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import numpy as np
from matplotlib.figure import Figure

from domain import AlertState
from rules.backtest.replay import RunResult
from rules.backtest.series import DeviceInfo, DeviceSeries
from rules.settings import RuleSettings, device_params

SeriesLoader = Callable[[list[str]], Mapping[str, DeviceSeries]]  # device ids → their series
PANELS = 4
METRIC = {"bin": ("fill_pct", "fill_fire_pct"), "manhole_cover": ("tilt_deg", "tilt_fire_deg"),
          "water_level": ("level_cm", "warning_cm")}  # fmt: skip
RUN_COLOURS = {"current": "tab:blue", "proposed": "tab:orange"}


def draw_charts(
    out_dir: Path,
    devices: Mapping[str, DeviceInfo],
    readings: Mapping[str, int],
    runs: Mapping[str, RunResult],
    settings: Mapping[str, RuleSettings],
    report: Mapping[str, Any],
    load: SeriesLoader,
) -> list[Path]:
    """Write ``backtest-<kind>.png`` per kind with devices; return the paths. Of each kind
    the devices whose cases changed most are drawn (``load`` reads just their series)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    changed = Counter(c["alert_key"].split("/")[0] for c in [*report["added"], *report["removed"]])
    written = []
    for kind, (metric, level_param) in METRIC.items():
        mine = [d for d, info in devices.items() if info.kind == kind and readings.get(d)]
        if not mine:
            continue
        mine.sort(key=lambda d: -changed[d])
        drawn = load(mine[:PANELS])
        figure = Figure(figsize=(11, 2.6 * len(drawn)), layout="constrained")
        axes = figure.subplots(len(drawn), 1, squeeze=False)[:, 0]
        for ax, one in zip(axes, [drawn[d] for d in mine[:PANELS]], strict=True):
            _panel(ax, one, metric, level_param, runs, settings)
        figure.suptitle(f"{kind}: current vs proposed")
        path = out_dir / f"backtest-{kind}.png"
        figure.savefig(path, dpi=80)
        written.append(path)
    return written


def _panel(ax, one: DeviceSeries, metric: str, level_param: str, runs, settings) -> None:
    device_id = one.device.device_id
    times = one.ts.astype("datetime64[ms]")
    ax.plot(times, one.column(metric), lw=0.8, color="0.3", label=metric)
    for offset, (name, run) in enumerate(runs.items()):
        colour = RUN_COLOURS.get(name, "tab:green")
        params = device_params(settings[name], device_id, one.device.kind)
        level = getattr(params, level_param, None)
        if level is not None:
            ax.axhline(level, color=colour, ls="--", lw=1, label=f"{name} level {level:g}")
        for start, end in _intervals(run, device_id, int(one.ts[-1])):
            ax.axvspan(np.datetime64(start, "ms"), np.datetime64(end, "ms"), color=colour,
                       ymin=0.02 + 0.05 * offset, ymax=0.06 + 0.05 * offset)  # fmt: skip
        opened = [c.opened_ms for c in run.cases if c.alert_key.startswith(device_id + "/")]
        if opened:
            ax.plot(np.array(opened, dtype="datetime64[ms]"), [ax.get_ylim()[1]] * len(opened),
                    "v", color=colour, label=f"{name} cases")  # fmt: skip
    ax.set_title(device_id, fontsize=9, loc="left")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    ax.legend(fontsize=7, loc="upper right")


def _intervals(run: RunResult, device_id: str, last_ms: int) -> list[tuple[int, int]]:
    """Firing spans of the device's rule alerts (health alerts aside)."""
    spans, open_at = [], {}
    for alert in run.alerts:
        if alert.source_id != device_id or "/health/" in alert.key:
            continue
        if alert.state is AlertState.CLEARED:
            if alert.key in open_at:
                spans.append((open_at.pop(alert.key), alert.ts))
        else:
            open_at.setdefault(alert.key, alert.ts)
    spans.extend((start, last_ms) for start in open_at.values())
    return spans
