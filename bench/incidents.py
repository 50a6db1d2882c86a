"""Incident merge search at city scale: alerts/s through ``IncidentBook.handle`` with
100,000 open incidents, beside a scan of the same incidents, and memory per incident.

The city: a 38 km square (a prefecture-level city's built-up area) with one open incident
every 120 m on a jittered lattice (±15 m, so no two merge), classes dealt round-robin:
the collection-point family (06042 bin overflow, 06010 exposed rubbish, 06011, radius
30 m, window 2 h) and three unrelated classes (50 m, 24 h); duplicates on (0.8 / 0.5).
Then new alerts, half 5-20 m from an incident of a related class (they merge or are
judged), half at a lattice cell's centre, more than 60 m from every seeded incident (they
open new ones, or join an earlier one at the same centre):

- **index**: the book as shipped (a grid of cells per radius, rules/merge_index.py);
- **scan**: the same book given an index that hands back every open incident of the
  alert's class or family (``index_type``, a subclass here; nothing else changed): what
  each alert cost before the index (then every open incident was looked at, so this
  baseline is if anything kind to it).
  Both run on the same 100,000 incidents; the scan on fewer alerts (it is slow).

Memory per incident: tracemalloc's traced bytes after opening the 100,000 (the incident
dicts as the gateway persists them, with their latest alert, plus the key map and index),
divided by their number.

Usage: python bench/incidents.py [--incidents 100000] [--alerts 20000] [--scan-alerts 400]
       [--no-write]
Prints the figures and writes them into BENCHMARKS.md (section "Incident merge search").
"""

from __future__ import annotations

import argparse
import copy
import gc
import random
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks_doc import write_report  # noqa: E402

from domain import Alert, AlertState, Location, Priority  # noqa: E402
from rules.incidents import IncidentBook  # noqa: E402
from rules.merge_index import MergeIndex  # noqa: E402
from rules.merge_settings import MergeSettings  # noqa: E402

SECTION = "## Incident merge search (bench/incidents.py)"
ORIGIN = (26.0, 119.1)  # south-west corner, near Fuzhou
SPACING_M = 120.0
JITTER_M = 15.0
M_PER_DEG_LAT = 111_195.0
CLASSES = ["06042", "06010", "06011", "01003", "01001", "02001"]
RELATED = {"06042": "06010", "06010": "06011", "06011": "06042"}
SETTINGS = MergeSettings.model_validate(
    {
        "families": [
            {"name": "collection_point", "classes": ["06042", "06010", "06011"],
             "lead": "06042", "radius_m": 30, "window_s": 7200}
        ],
        "duplicates": {"merge_above": 0.8, "suspect_above": 0.5},
    }
)  # fmt: skip


class _ScanIndex(MergeIndex):
    """Every candidate of the group, wherever it is: a scan, as before the index."""

    def near(self, group: str, location: Location) -> list[tuple[str, Location]]:
        return self.candidates(group)


def place(row: int, col: int, north_m: float, east_m: float) -> Location:
    lat = ORIGIN[0] + (row * SPACING_M + north_m) / M_PER_DEG_LAT
    m_per_deg_lon = M_PER_DEG_LAT * 0.8988  # cos(26°)
    lon = ORIGIN[1] + (col * SPACING_M + east_m) / m_per_deg_lon
    return Location(lat, lon, f"lattice {row},{col}", "")


def alert(key: str, code: str, where: Location, ts: int, origin: str) -> Alert:
    return Alert(f"{key}/r", key, "r", AlertState.FIRING, code, Priority.NORMAL, where, ts,
                 summary=f"{key} {code}", origin=origin)  # fmt: skip


def seeds(count: int, side: int, rng: random.Random) -> list[tuple[int, int, Alert]]:
    out = []
    for i in range(count):
        row, col = divmod(i, side)
        jitter = (rng.uniform(-JITTER_M, JITTER_M), rng.uniform(-JITTER_M, JITTER_M))
        where = place(row, col, *jitter)
        out.append((row, col, alert(f"S{i}", CLASSES[i % len(CLASSES)], where, 0, "iot")))
    return out


def probes(city: list[tuple[int, int, Alert]], count: int, rng: random.Random) -> list[Alert]:
    """Half near an incident (a related class, 5-20 m away), half at a cell's centre."""
    out = []
    for n in range(count):
        row, col, seed = city[rng.randrange(len(city))]
        ts = 60_000 + n
        if n % 2 == 0:
            offset = rng.uniform(5, 20)
            where = Location(seed.location.lat + offset / M_PER_DEG_LAT, seed.location.lon)
            code = RELATED.get(seed.class_code, seed.class_code)
            out.append(alert(f"P{n}", code, where, ts, "video" if n % 4 == 0 else "iot"))
        else:
            where = place(row, col, SPACING_M / 2, SPACING_M / 2)
            out.append(alert(f"P{n}", rng.choice(CLASSES), where, ts, "iot"))
    return out


def build(city: list[tuple[int, int, Alert]]) -> tuple[IncidentBook, list[dict]]:
    """The book with every seed's incident open, and the incident dicts as persisted."""
    book = IncidentBook(SETTINGS.to_policy(), SETTINGS)
    for _, _, seed in city:
        book.handle(seed)
    return book, list(book.take_dirty().values())


def scanning(incidents: list[dict]) -> IncidentBook:
    """The scan baseline, loaded as after a restart (opening through a scan is quadratic)."""
    book = IncidentBook(SETTINGS.to_policy(), SETTINGS, index_type=_ScanIndex)
    for incident in incidents:
        book.load(copy.deepcopy(incident))
    return book


def rate(book: IncidentBook, alerts: list[Alert]) -> tuple[float, float, float]:
    """Alerts/s over all, over the near half and over the far half."""
    times = [0.0, 0.0]
    for n, a in enumerate(alerts):
        start = time.perf_counter()
        book.handle(a)
        times[n % 2] += time.perf_counter() - start
    half = len(alerts) / 2
    return len(alerts) / sum(times), half / times[0], half / times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=100_000)
    parser.add_argument("--alerts", type=int, default=20_000)
    parser.add_argument("--scan-alerts", type=int, default=400)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rng = random.Random(13)
    side = int(args.incidents**0.5) + 1
    city = seeds(args.incidents, side, rng)

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    book, incidents = build(city)
    opened_s = time.perf_counter() - started
    per_incident = (tracemalloc.get_traced_memory()[0] - before) / args.incidents
    tracemalloc.stop()
    assert len(book.open_ids()) == args.incidents, "seeds must not merge"

    baseline = scanning(incidents)
    alerts = probes(city, args.alerts, rng)
    total, near, far = rate(book, alerts)
    opened = sum(1 for i in book.open_ids() if i.startswith("INC-")) - args.incidents
    suspected = len(book.take_suspects())
    scan_total, scan_near, scan_far = rate(baseline, alerts[: args.scan_alerts])
    side_km = side * SPACING_M / 1000
    report = "\n".join([
        f"open incidents                  {args.incidents:>10,} ({side_km:.0f} km square, "
        f"{len(CLASSES)} classes, 1 family)",
        f"opening them (tracemalloc on)   {opened_s:>10.1f} s",
        f"memory per open incident        {per_incident:>10,.0f} B",
        f"{f'index: alerts/s ({args.alerts:,})':<32}{total:>10,.0f}  "
        f"(near {near:,.0f}, far {far:,.0f})",
        f"{'  outcomes':<32}{args.alerts - opened:>10,} merged, {opened:,} new "
        f"({suspected:,} of them suspected duplicates)",
        f"{f'scan:  alerts/s ({args.scan_alerts:,})':<32}{scan_total:>10,.0f}  "
        f"(near {scan_near:,.0f}, far {scan_far:,.0f})",
        f"index / scan                    {total / scan_total:>10,.0f} x",
    ])  # fmt: skip
    print(report)
    if not args.no_write:
        about = (
            "IncidentBook.handle for new alerts (half 5-20 m from an incident of a related "
            "class, half > 60 m from all), families and duplicates on; the scan is the same "
            "book with an index that returns every incident of the alert's class or family."
        )
        write_report(SECTION, about, report)


if __name__ == "__main__":
    main()
