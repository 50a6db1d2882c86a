"""Exports telemetry to InfluxDB 2.x, reading forward from the embedded store.

Why a cursor rather than a queue: every accepted reading is already committed to SQLite
before the sink hears of it, so the sink keeps no copy. It remembers the rowid of the last
reading InfluxDB accepted (table ``state``, namespace ``influx_export``, one key per
url/org/bucket) and reads the next ``batch_size`` rows after it. Ingest only calls
``notify()``, which sets an event and returns; it never waits for InfluxDB, and nothing is
dropped when InfluxDB is down for hours or the gateway restarts: the backlog is simply the
rows past the cursor, sent in order once InfluxDB answers again. The one limit is raw
retention (gateway/history.py): rows folded away before they were exported are counted in
``lost_to_retention``. A destination seen for the first time is backfilled with every raw
reading still kept.

A batch is re-sent until InfluxDB answers 2xx: 5xx, 429 and connection errors back off
exponentially (``Retry-After`` wins when given); any other 4xx (bad token, unknown bucket,
rejected data) parks the sink with the reason in ``stats()`` and the log, and retries on
the slow ``park_retry_s`` cadence, so fixing the token or bucket is enough to resume.
The cursor moves only after a 2xx, so a crash between the two re-sends one batch; InfluxDB
keeps one point per series and timestamp, so the re-sent points replace themselves.

Points: measurement ``readings``, tags ``device_id``, ``kind``, ``gateway_id`` (and
``suspect=true`` on readings kept while their device was suspect), one field per value, time
in ms. Numbers are always written as floats: InfluxDB fixes a field's type by its first
write, and a sensor that once reports ``3`` must not make ``3.5`` a conflict. Lines are
formatted here rather than through influxdb-client's ``Point``: measured, ``Point`` costs
~11 µs a reading, and on a 2-core gateway that CPU is taken from ingest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from domain import Backoff, parse_retry_after
from gateway.history import InfluxSettings

log = logging.getLogger(__name__)

MEASUREMENT = "readings"
CURSOR_NS = "influx_export"
# Readings committed by a path that forgot to notify still go out within this long.
IDLE_POLL_S = 5.0

Row = tuple[int, str, int, str, int]  # rowid, device_id, ts, values_json, suspect


class InfluxSink:
    """Run ``run()`` as a task on the gateway's loop (which orders every write: it moves the
    cursor there); call ``notify()`` after each commit that stored readings."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        settings: InfluxSettings,
        gateway_id: str,
        kinds: Mapping[str, str],
    ) -> None:
        self._conn = conn
        self._settings = settings
        self._gateway_id = gateway_id
        self._kinds = kinds
        url = str(settings.url).rstrip("/")
        self._cursor_key = f"{url} {settings.org} {settings.bucket}"
        self._gateway_tag = _escape(gateway_id)
        self._client = InfluxDBClient(
            url=url,
            token=settings.token.get_secret_value(),
            org=settings.org,
            timeout=int(settings.timeout_s * 1000),
            enable_gzip=settings.gzip,
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._backoff = Backoff(settings.retry.initial_s, settings.retry.max_s)
        self._cursor = self._load_cursor()
        self._wake = asyncio.Event()
        self.exported = 0
        self.lost_to_retention = 0
        self.failures: Counter[str] = Counter()
        self.last_error = ""
        self.state = "idle"  # idle | sending | retrying | parked

    def notify(self) -> None:
        """New readings were committed. Returns at once; the sink reads them itself."""
        self._wake.set()

    def stats(self) -> dict[str, Any]:
        newest = self._conn.execute("SELECT coalesce(max(rowid), 0) FROM readings").fetchone()[0]
        oldest = self._conn.execute(
            "SELECT ts FROM readings WHERE rowid > ? ORDER BY rowid LIMIT 1", (self._cursor,)
        ).fetchone()
        return {
            "state": self.state,
            "exported": self.exported,
            # Exact unless retention folded rows past the cursor (then an upper bound).
            "pending": max(0, newest - self._cursor),
            # Event time of the oldest reading not exported yet (None: none waits): how far
            # InfluxDB's history lags behind the store.
            "oldest_pending_ms": oldest[0] if oldest else None,
            "cursor": self._cursor,
            "lost_to_retention": self.lost_to_retention,
            "last_error": self.last_error,
            "failures": dict(self.failures),
        }

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                rows = self._next_rows()
                if not rows:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)
                    continue
                await self._export(rows)
                if len(rows) < self._settings.batch_size:
                    await asyncio.sleep(self._settings.flush_interval_s)
        finally:
            self._client.close()

    def _next_rows(self) -> list[Row]:
        return self._conn.execute(
            "SELECT rowid, device_id, ts, values_json, suspect FROM readings WHERE rowid > ?"
            " ORDER BY rowid LIMIT ?",
            (self._cursor, self._settings.batch_size),
        ).fetchall()

    async def _export(self, rows: Sequence[Row]) -> None:
        """Send one batch until InfluxDB takes it, then move the cursor past it. Points are
        built and serialised in a worker thread too: a 5000-row batch costs tens of ms of CPU
        that ingest on the loop should not wait behind."""
        points = await asyncio.to_thread(self._lines, rows)
        attempt = 0
        while points:
            self.state = "sending"
            try:
                await asyncio.to_thread(
                    self._write_api.write,
                    bucket=self._settings.bucket,
                    org=self._settings.org,
                    record=points,
                    write_precision=WritePrecision.MS,
                )
                break
            except ApiException as exc:
                delay = self._failed(exc.status, _error_text(exc), exc.retry_after, attempt)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                delay = self._failed(None, f"{type(exc).__name__}: {exc}", None, attempt)
            attempt += 1
            await asyncio.sleep(delay)
        self._advance(rows, len(points))

    def _failed(
        self, status: int | None, message: str, retry_after: str | None, attempt: int
    ) -> float:
        """Count the failure and say how long to wait before sending the batch again."""
        reason = "connection" if status is None else f"http_{status}"
        self.failures[reason] += 1
        self.last_error = f"{reason}: {message}"
        if status is not None and status != 429 and status < 500:
            self.state = "parked"
            log.error("InfluxDB export parked (%s); retrying every %.0f s",
                      self.last_error, self._settings.park_retry_s)  # fmt: skip
            return self._settings.park_retry_s
        self.state = "retrying"
        delay = self._backoff.delay_s(attempt, parse_retry_after(retry_after, time.time()))
        log.warning("InfluxDB export: %s; retry in %.1f s", self.last_error, delay)
        return delay

    def _advance(self, rows: Sequence[Row], exported: int) -> None:
        previous = self._cursor
        for rowid, *_ in rows:
            # Rowids are dense (insert-only table, max+1): a gap is rows folded away.
            self.lost_to_retention += rowid - previous - 1
            previous = rowid
        self._cursor = previous
        self._conn.execute(
            "INSERT OR REPLACE INTO state (ns, key, value) VALUES (?, ?, ?)",
            (CURSOR_NS, self._cursor_key, json.dumps(self._cursor)),
        )
        self.exported += exported
        self.state = "idle"

    def _load_cursor(self) -> int:
        row = self._conn.execute(
            "SELECT value FROM state WHERE ns = ? AND key = ?", (CURSOR_NS, self._cursor_key)
        ).fetchone()
        if row is not None:
            return json.loads(row[0])
        # First export to this bucket: start from the oldest reading still kept.
        oldest = self._conn.execute("SELECT min(rowid) FROM readings").fetchone()[0]
        return oldest - 1 if oldest is not None else 0

    def _lines(self, rows: Sequence[Row]) -> list[str]:
        return [line for line in map(self._line, rows) if line is not None]

    def _line(self, row: Row) -> str | None:
        """One reading in line protocol; None when it has no values to write."""
        _rowid, device_id, ts, values_json, suspect = row
        values = json.loads(values_json)
        if not values:
            return None
        tags = f"{MEASUREMENT},device_id={_escape(device_id)},gateway_id={self._gateway_tag}"
        kind = self._kinds.get(device_id)
        if kind:  # an empty tag value is not allowed in line protocol
            tags += f",kind={_escape(kind)}"
        if suspect:  # kept for the record; dashboards filter on it
            tags += ",suspect=true"
        fields = ",".join(
            f"{_escape(name)}={_field_value(value)}" for name, value in values.items()
        )
        return f"{tags} {fields} {ts}"


def _escape(text: str) -> str:
    """Tag keys, tag values and field keys: commas, equals signs and spaces escaped."""
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _field_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(float(value))  # always a float field (see the module docstring)


def _error_text(exc: ApiException) -> str:
    """InfluxDB's own JSON ``message`` when it sent one, else the body or HTTP reason."""
    text = exc.message or exc.reason
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
