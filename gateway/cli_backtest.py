"""``citygw backtest``: what would these threshold changes have filed?

Reads the gateway's store file directly and read-only (the gateway may be running; SQLite's
WAL lets a reader in beside the writer), replays the window with the current and the
proposed settings and writes report.json, summary.txt and a PNG per device class to
``--out``; the summary is printed too. A progress bar shows on a terminal.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from tqdm import tqdm

from gateway.backtest import BacktestError, BacktestRequest, backtest_from_config, summary_text

MAX_CHANGES = 100


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "backtest", help="replay stored readings with proposed thresholds and compare the cases"
    )
    parser.add_argument("-c", "--config", required=True, help="the gateway's config file")
    parser.add_argument(
        "--since", required=True, help="ISO date/time (config time zone) or epoch ms"
    )
    parser.add_argument(
        "--until", required=True, help="ISO date/time (config time zone) or epoch ms"
    )
    parser.add_argument(
        "--set", dest="changes", action="append", default=[], metavar="PATH=VALUE",
        help="a proposed change, e.g. bin.fill_fire_pct=85",
    )  # fmt: skip
    parser.add_argument("--devices", nargs="+", default=[], metavar="ID", help="only these devices")
    parser.add_argument("--grid", nargs="+", default=[], metavar="CODE", help="only these grids")
    parser.add_argument(
        "--warm-up-s", type=float, default=86_400.0,
        help="replayed before --since to rebuild state (default one day)",
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="folder for report.json, summary.txt, PNGs")
    parser.set_defaults(handler=_backtest)


def _backtest(args: argparse.Namespace) -> int:
    from gateway.config import load_config

    try:
        config = load_config(args.config)
        backtest = backtest_from_config(config)
        request = BacktestRequest(
            since_ms=instant_ms("since", args.since, config.tz),
            until_ms=instant_ms("until", args.until, config.tz),
            changes=changes(args.changes),
            devices=tuple(args.devices),
            grids=tuple(args.grid),
            warm_up_ms=round(args.warm_up_s * 1000),
        )
        with tqdm(total=0, unit=" readings", disable=None, file=sys.stderr) as bar:
            report = backtest.run(request, _progress(bar), Path(args.out))
    except (ValueError, OSError) as exc:  # config, registry, request, store: one line
        print(f"citygw backtest: {exc}", file=sys.stderr)
        return 2
    print(summary_text(report))
    return 0


def instant_ms(name: str, text: str, tz: ZoneInfo) -> int:
    """Epoch milliseconds, or an ISO 8601 date/time (without offset: the city's zone)."""
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BacktestError(f"{name}: {text!r} is neither an ISO date/time nor epoch ms") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    return round(when.timestamp() * 1000)


def changes(items: list[str]) -> dict[str, str | None]:
    """``PATH=VALUE`` items (``null`` removes a device or zone override)."""
    if len(items) > MAX_CHANGES:
        raise BacktestError(f"set: at most {MAX_CHANGES} changes")
    out: dict[str, str | None] = {}
    for item in items:
        path, equals, value = item.partition("=")
        if not equals or not path:
            raise BacktestError(f"set: expected PATH=VALUE, got {item!r}")
        out[path] = None if value == "null" else value
    return out


def _progress(bar: tqdm):
    def show(stage: str, done: int, total: int) -> None:
        bar.set_description(stage)
        if total and bar.total != total:
            bar.reset(total=total)
        bar.n = done
        bar.refresh()

    return show
