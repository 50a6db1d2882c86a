"""Read a window of stored readings into per-device columns, fast.

A week of a city is ~20 million rows; handing each to Python as a tuple and parsing its
JSON there costs more than the whole replay. Instead SQLite does the work in C, and
Python only parses numbers and slices arrays:

- The selected devices go into a TEMP table (device id → its position in the selection
  and its kind) on the read-only connection, and the table scan joins it: rows of other
  devices are dropped in SQLite, and a row's device crosses into Python as a small
  integer, not as an id string to look up.
- Rows are aggregated per kind (``FILTER``) with that kind's own ``json_extract`` paths,
  so each kind's values form a table of fixed width with no columns the kind never
  sends (the mostly-``null`` columns of one path list for all kinds cost as much to parse
  as the readings themselves).
- A chunk of 200,000 rows crosses as three long strings per kind that numpy parses at
  once; the rows are grouped per device with one stable radix sort of the small device
  numbers, which keeps each device's arrival order — and the replay guard made that the
  order of strictly increasing ``ts``.

The table is read in rowid order (the order it was written, sequential on disk, where the
(device_id, ts) index would make every row a random page read). (Two connections reading
halves of the table in two threads were slower than one here: SQLite's own locking
serialises them; worker processes, each with its own connection and share of the
devices, do gain: gateway/backtest_shards.py.)

A selection of a few devices reads through the (device_id, ts) index instead of the table.
The connection is read-only (``open_read_only``): a backtest can never write the store.
"""

from __future__ import annotations

import contextlib
import sqlite3
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from devices.kinds import KINDS
from rules.backtest.series import DeviceInfo, DeviceSeries

CHUNK_ROWS = 200_000
# Up to this many devices, per-device reads through the index beat one table scan.
INDEX_READ_DEVICES = 200
BOOLEANS = frozenset(n for specs in KINDS.values() for n, s in specs.items() if s.boolean)
KIND_NUMBERS = {kind: n for n, kind in enumerate(KINDS)}
# Per kind, its fields as one json_extract: a JSON array, numbers as stored, in KINDS order.
_EXTRACT = {
    kind: "json_extract(r.values_json, " + ", ".join(f"'$.{name}'" for name in specs) + ")"
    for kind, specs in KINDS.items()
}
_JSON_WORDS = ((b"null", b"nan"), (b"true", b"1"), (b"false", b"0"))

Progress = Callable[[int], None]  # rows read so far, for a progress bar
# One kind's rows of a chunk or a device: device positions, times, values (one column a field).
Rows = tuple[np.ndarray, np.ndarray, np.ndarray]


class StoreReadError(ValueError):
    """Stored rows the backtest cannot read (the message says which)."""


def open_read_only(
    path: Path, selection: Mapping[str, DeviceInfo] | None = None
) -> sqlite3.Connection:
    """The store, opened so that nothing can be written through this connection. With a
    ``selection``, its devices are first put in the TEMP table ``selection`` (device_id,
    position in the selection, kind number): a ``mode=ro`` connection may still write its
    own temporary database, until ``query_only`` closes that too."""
    if not path.is_file():
        raise StoreReadError(f"store {path}: no such file")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    if selection is not None:
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute(
            "CREATE TEMP TABLE selection"
            " (device_id TEXT PRIMARY KEY, i INTEGER NOT NULL, kind INTEGER NOT NULL) WITHOUT ROWID"
        )
        conn.executemany(
            "INSERT INTO selection VALUES (?, ?, ?)",
            ((d, i, KIND_NUMBERS[info.kind]) for i, (d, info) in enumerate(selection.items())),
        )
    conn.execute("PRAGMA query_only=1")
    return conn


def window_rowids(conn: sqlite3.Connection) -> tuple[int, int]:
    """The first and last rowid of the readings table (0, -1 when empty)."""
    low, high = conn.execute("SELECT min(rowid), max(rowid) FROM readings").fetchone()
    return (low, high) if low is not None else (0, -1)


def load_series(
    path: Path,
    devices: Mapping[str, DeviceInfo],
    since_ms: int,
    until_ms: int,
    progress: Progress | None = None,
    id_range: tuple[str, str | None] | None = None,
) -> dict[str, DeviceSeries]:
    """Every selected device's readings with ``since_ms <= ts <= until_ms``, as columns.
    With ``id_range`` (low, high; None: no bound), a table scan reads only the rows of
    device ids ``low <= id < high``: a worker's share, its selected devices all in it."""
    parts: dict[str, list[Rows]] = {kind: [] for kind in KINDS}
    if len(devices) <= INDEX_READ_DEVICES:
        with contextlib.closing(open_read_only(path)) as conn:
            for i, (device_id, info) in enumerate(devices.items()):
                ts, table = _read_device(conn, device_id, info.kind, since_ms, until_ms)
                parts[info.kind].append((np.full(ts.shape[0], i), ts, table))
                if progress:
                    progress(ts.shape[0])
    else:
        kinds = [kind for kind in KINDS if any(d.kind == kind for d in devices.values())]
        query, params = _chunk_query(kinds, since_ms, until_ms, id_range)
        with contextlib.closing(open_read_only(path, devices)) as conn:
            low, high = window_rowids(conn)
            for lo in range(low, high + 1, CHUNK_ROWS):
                bounds = (lo, min(lo + CHUNK_ROWS - 1, high))
                columns = conn.execute(query, (*bounds, *params)).fetchone()
                rows = 0
                for n, kind in enumerate(kinds):
                    chunk = _parse_chunk(kind, *columns[3 * n : 3 * n + 3], bounds)
                    parts[kind].append(chunk)
                    rows += chunk[1].shape[0]
                if progress:
                    progress(rows)
    return _split(devices, parts)


def _chunk_query(
    kinds: list[str], since_ms: int, until_ms: int, id_range: tuple[str, str | None] | None
) -> tuple[str, tuple]:
    """One chunk's rows of the selected devices, three strings per kind; the parameters
    after the chunk's rowid bounds. ``+r.device_id`` keeps the planner off the (device_id,
    ts) index for the share's range: the scan is by rowid, the range only a cheap test
    before the join's lookup."""
    columns = ", ".join(
        f"group_concat({expr}) FILTER (WHERE s.kind = {KIND_NUMBERS[kind]})"
        for kind in kinds
        for expr in ("s.i", "r.ts", _EXTRACT[kind])
    )
    query = (
        f"SELECT {columns} FROM readings r CROSS JOIN temp.selection s"
        " ON s.device_id = r.device_id WHERE r.rowid BETWEEN ? AND ? AND r.ts BETWEEN ? AND ?"
    )
    params: tuple = (since_ms, until_ms)
    if id_range is not None:
        query += " AND +r.device_id >= ?"
        params += (id_range[0],)
        if id_range[1] is not None:
            query += " AND +r.device_id < ?"
            params += (id_range[1],)
    return query, params


def _parse_chunk(
    kind: str, positions: str | None, times: str | None, values: str | None, bounds: tuple
) -> Rows:
    where = f"rowid {bounds[0]}–{bounds[1]}"
    if positions is None:
        return _no_rows(kind)
    device_of = _numbers(positions, np.int64, "device", where)
    ts = _numbers(times or "", np.int64, "ts", where)
    table = _values(values or "", kind, where)
    if not device_of.shape[0] == ts.shape[0] == table.shape[0]:
        raise StoreReadError(f"readings {where}: columns do not line up")
    return device_of, ts, table


def _no_rows(kind: str) -> Rows:
    return np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, len(KINDS[kind])))


def _read_device(
    conn: sqlite3.Connection, device_id: str, kind: str, since_ms: int, until_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    query = (
        f"SELECT group_concat(r.ts), group_concat({_EXTRACT[kind]}) FROM (SELECT ts, values_json"
        " FROM readings WHERE device_id = ? AND ts BETWEEN ? AND ? ORDER BY ts) r"
    )
    times, values = conn.execute(query, (device_id, since_ms, until_ms)).fetchone()
    if times is None:
        return np.empty(0, np.int64), np.empty((0, len(KINDS[kind])))
    ts = _numbers(times, np.int64, "ts", device_id)
    table = _values(values or "", kind, device_id)
    if ts.shape[0] != table.shape[0]:
        raise StoreReadError(f"readings {device_id}: columns do not line up")
    return ts, table


def _values(text: str, kind: str, where: object) -> np.ndarray:
    """A kind's ``json_extract`` arrays, ``[1.5,true,null],[…]``, as a table of floats
    (a row a reading, a column a field; null: NaN, true/false: 1/0)."""
    data = text.encode().translate(None, b"[]")
    for word, number in _JSON_WORDS:
        data = data.replace(word, number)
    flat = _numbers(data, np.float64, "values_json", where)
    width = len(KINDS[kind])
    if flat.shape[0] % width:
        raise StoreReadError(f"readings {where}: values_json does not give {width} fields a row")
    return flat.reshape(-1, width)


def _numbers(text: str | bytes, dtype: type, column: str, where: object) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # numpy's word for a bad token
        try:
            return np.fromstring(text, dtype=dtype, sep=",")
        except (DeprecationWarning, ValueError):
            raise StoreReadError(
                f"readings {where}: {column} holds something not a number"
            ) from None


def _split(
    devices: Mapping[str, DeviceInfo], parts: Mapping[str, list[Rows]]
) -> dict[str, DeviceSeries]:
    """Each kind's rows grouped per device (in the selection's order), arrival order kept."""
    out: dict[str, DeviceSeries] = {}
    order = list(devices)
    # The smallest unsigned type that numbers the devices: numpy sorts 8- and 16-bit
    # integers stably by radix, several times faster than int64.
    small = np.min_scalar_type(max(len(order) - 1, 0))
    for kind, rows in parts.items():
        rows = rows or [_no_rows(kind)]
        device_of = np.concatenate([r[0] for r in rows]).astype(small)
        by_device = np.argsort(device_of, kind="stable")  # keeps each device's arrival order
        ts = np.concatenate([r[1] for r in rows])[by_device]
        table = np.concatenate([r[2] for r in rows])
        names = list(KINDS[kind])
        columns = [table[by_device, c] for c in range(len(names))]
        edges = np.concatenate(([0], np.cumsum(np.bincount(device_of, minlength=len(order)))))
        for i, device_id in enumerate(order):
            info = devices[device_id]
            if info.kind != kind:
                continue
            lo, hi = edges[i], edges[i + 1]
            times = ts[lo:hi]
            fields = {name: column[lo:hi] for name, column in zip(names, columns, strict=True)}
            if times.shape[0] > 1 and not np.all(times[1:] > times[:-1]):
                ordered = np.argsort(times, kind="stable")  # rows written out of order
                times = times[ordered]
                fields = {name: column[ordered] for name, column in fields.items()}
            out[device_id] = DeviceSeries(info, times, fields, BOOLEANS & fields.keys())
    return {device_id: out[device_id] for device_id in order}
