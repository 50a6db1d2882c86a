"""Read a window of stored readings into per-device columns, fast.

A week of a city is ~20 million rows; handing each to Python as a tuple and parsing its
JSON there costs more than the whole replay. Instead SQLite does the work in C: one
``json_extract`` with every field's path per row and ``group_concat`` over a chunk of
rows, so a chunk of 200,000 readings crosses into Python as three long strings that numpy
parses at once. The table is read in rowid order (the order it was written, sequential on
disk, where the (device_id, ts) index would make every row a random page read); rows are
then grouped per device with one stable sort, which keeps each device's arrival order — and
the replay guard made that the order of strictly increasing ``ts``. (Two connections
reading halves of the table in two threads were slower than one here: SQLite's own
locking serialises them; worker processes, each with its own connection and share of the
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
FIELDS = tuple(dict.fromkeys(name for specs in KINDS.values() for name in specs))
BOOLEANS = frozenset(n for specs in KINDS.values() for n, s in specs.items() if s.boolean)
_EXTRACT = ", ".join(f"'$.{name}'" for name in FIELDS)
_COLUMNS = (
    "group_concat(device_id, char(31)), group_concat(ts),"
    f" group_concat(json_extract(values_json, {_EXTRACT}))"
)
_JSON_WORDS = (("[", ""), ("]", ""), ("null", "nan"), ("true", "1"), ("false", "0"))

Progress = Callable[[int], None]  # rows read so far, for a progress bar


class StoreReadError(ValueError):
    """Stored rows the backtest cannot read (the message says which)."""


def open_read_only(path: Path) -> sqlite3.Connection:
    """The store, opened so that nothing can be written through this connection."""
    if not path.is_file():
        raise StoreReadError(f"store {path}: no such file")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
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
    order = list(devices)
    index = {device_id: i for i, device_id in enumerate(order)}
    parts = []
    with contextlib.closing(open_read_only(path)) as conn:
        if len(order) <= INDEX_READ_DEVICES:
            for i, device_id in enumerate(order):
                ts, table = _read_device(conn, device_id, since_ms, until_ms)
                parts.append((np.full(ts.shape[0], i, dtype=np.int64), ts, table))
                if progress:
                    progress(ts.shape[0])
        else:
            low, high = window_rowids(conn)
            for lo in range(low, high + 1, CHUNK_ROWS):
                bounds = (lo, min(lo + CHUNK_ROWS - 1, high))
                parts.append(_read_chunk(conn, bounds, since_ms, until_ms, index, id_range))
                if progress:
                    progress(parts[-1][1].shape[0])
    device_of = np.concatenate([p[0] for p in parts] or [np.empty(0, np.int64)])
    ts = np.concatenate([p[1] for p in parts] or [np.empty(0, np.int64)])
    values = np.concatenate([p[2] for p in parts] or [np.empty((0, len(FIELDS)))])
    return _split(order, devices, device_of, ts, values)


def _read_chunk(
    conn: sqlite3.Connection,
    bounds: tuple[int, int],
    since_ms: int,
    until_ms: int,
    index: Mapping[str, int],
    id_range: tuple[str, str | None] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    query = f"SELECT {_COLUMNS} FROM readings WHERE rowid BETWEEN ? AND ? AND ts BETWEEN ? AND ?"
    params: tuple = (*bounds, since_ms, until_ms)
    if id_range is not None:
        query += " AND device_id >= ?"
        params += (id_range[0],)
        if id_range[1] is not None:
            query += " AND device_id < ?"
            params += (id_range[1],)
    ids, times, values = conn.execute(query, params).fetchone()
    if ids is None:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, len(FIELDS)))
    device_of = np.array([index.get(d, -1) for d in ids.split("\x1f")], dtype=np.int64)
    ts = _numbers(times, np.int64, "ts", bounds)
    table = _numbers(values, np.float64, "values_json", bounds).reshape(-1, len(FIELDS))
    if not device_of.shape[0] == ts.shape[0] == table.shape[0]:
        raise StoreReadError(f"readings rowid {bounds[0]}–{bounds[1]}: columns do not line up")
    kept = device_of >= 0
    return device_of[kept], ts[kept], table[kept]


def _read_device(
    conn: sqlite3.Connection, device_id: str, since_ms: int, until_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    query = (
        f"SELECT {_COLUMNS} FROM (SELECT device_id, ts, values_json FROM readings"
        " WHERE device_id = ? AND ts BETWEEN ? AND ? ORDER BY ts)"
    )
    _, times, values = conn.execute(query, (device_id, since_ms, until_ms)).fetchone()
    if times is None:
        return np.empty(0, np.int64), np.empty((0, len(FIELDS)))
    ts = _numbers(times, np.int64, "ts", device_id)
    table = _numbers(values, np.float64, "values_json", device_id).reshape(-1, len(FIELDS))
    return ts, table


def _numbers(text: str, dtype: type, column: str, where: object) -> np.ndarray:
    if dtype is np.float64:
        for word, number in _JSON_WORDS:
            text = text.replace(word, number)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # numpy's word for a bad token
        try:
            return np.fromstring(text, dtype=dtype, sep=",")
        except (DeprecationWarning, ValueError):
            raise StoreReadError(
                f"readings {where}: {column} holds something not a number"
            ) from None


def _split(
    order: list[str],
    devices: Mapping[str, DeviceInfo],
    device_of: np.ndarray,
    ts: np.ndarray,
    values: np.ndarray,
) -> dict[str, DeviceSeries]:
    by_device = np.argsort(device_of, kind="stable")  # keeps each device's arrival order
    device_of, ts, values = device_of[by_device], ts[by_device], values[by_device]
    edges = np.searchsorted(device_of, np.arange(len(order) + 1), "left")
    out = {}
    for i, device_id in enumerate(order):
        info = devices[device_id]
        lo, hi = edges[i], edges[i + 1]
        times = ts[lo:hi]
        columns = [FIELDS.index(name) for name in KINDS[info.kind]]
        block = values[lo:hi]
        if times.shape[0] > 1 and not np.all(times[1:] > times[:-1]):
            ordered = np.argsort(times, kind="stable")  # rows written out of order
            times, block = times[ordered], block[ordered]
        fields = {FIELDS[c]: np.ascontiguousarray(block[:, c]) for c in columns}
        out[device_id] = DeviceSeries(info, times, fields, BOOLEANS & fields.keys())
    return out
