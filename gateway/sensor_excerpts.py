"""Sensor excerpts: a device's recent readings, filed with its alert as an evidence file.

A sensor case otherwise shows only the reading that crossed the line. Whoever handles it, or
disputes it months later, wants the run-up: a level rising for twenty minutes or a single
spike, a lid that flapped or stayed open. So when a device alert fires or escalates, the
gateway writes a small JSON document and records it on the alert exactly as a camera's
picture (gateway/evidence.py ``save_file``): a media entry with the file's SHA-256 and size,
a signed expiring link, the pictures' retention, and the same upload to a platform that
takes files (content type ``application/json``, by the ``.json`` name).

The document (``FORMAT``), keys in this order::

    {"format", "device_id", "kind",
     "alert": {"key", "rule_id", "state", "priority", "ts", "values"},
     "thresholds": the device's rule (or health) params in force, or null,
     "window": {"from_ts", "to_ts", "max_readings"},
     "readings_left_out": n,
     "readings": [{"ts", "seq", "suspect", "values"}, ...]}   oldest first, one a line

``readings`` are the newest stored readings of the device with ``from_ts <= ts < to_ts``
(``to_ts`` the alert's own time, ``from_ts`` ``window_s`` before it), at most
``max_readings``. The alerting reading itself is ``alert.values``: the excerpt is made
during the alert enrichment, before the alert's batch commits, so that reading is not in
the store yet (on a replica's desk it is, and is left out of ``readings`` all the same, so
both deployments write one document). Readings of the same batch before the alert are not
in the store yet either and are missing from an embedded gateway's excerpt. Those of the
batches before it are there: the embedded gateway commits batches on a thread while it
prepares the next (gateway/commit_queue.py), and the readings of batches queued or still
committing come from the pipeline (``unsaved``), merged with the stored ones, so an excerpt
neither waits for the disk nor misses them.

Every stored value is outside input: a value that is no finite number or boolean is null, a
reading keeps at most ``MAX_FIELDS`` fields with names clipped to ``MAX_NAME_CHARS`` (no
lone surrogate survives), and values that cannot be read at all are null. A document above
``max_bytes`` drops its oldest readings until it fits (``readings_left_out`` says how many);
one that cannot fit even without them is left out and counted, like a picture too large.
A store or disk failure costs the excerpt, counted, never the alert: the file is written
before the alert commits, and a file whose alert never commits is content-addressed (its
name holds its hash), so a replay of the batch writes the same file again.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from itertools import islice
from typing import Any

from domain import Alert, AlertState
from gateway import store
from gateway.evidence import EvidenceWriter
from gateway.evidence_settings import SensorExcerptSettings
from rules.settings import RuleSettings, device_health_params, device_params

FORMAT = "citygw-sensor-excerpt/1"
MAX_FIELDS = 64  # fields kept per reading
MAX_NAME_CHARS = 64  # of a field name
MAX_VALUES_CHARS = 65_536  # a stored values text longer than this is not parsed
MAX_KEY_CHARS = 64  # of the alert key in the file name: upload names stay within 128
MAX_INT = 2**63  # a stored integer beyond 64 bits is no reading's
MIN_TS = -(2**63)
EXCERPT_STATES = (AlertState.FIRING, AlertState.ESCALATED)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
_EXCERPT_ENTRY = re.compile(r"_excerpt_[0-9a-f]{16}\.json(?:[?#]|$)")
_COMPACT = {"separators": (",", ":"), "allow_nan": False}

# Newest first, so LIMIT keeps the newest; rowid breaks ties of one ts in insertion order
# (PostgreSQL's readings table has a rowid identity column for such queries).
_RECENT = (
    "SELECT ts, seq, values_json, suspect FROM readings WHERE device_id = ? AND ts >= ?"
    " AND ts < ? ORDER BY ts DESC, rowid DESC LIMIT ?"
)

Thresholds = Callable[[Alert], dict[str, Any] | None]


class SensorExcerpts:
    """Adds an excerpt to each firing or escalating alert of a registered device (``kinds``:
    device id → kind). Refusals go to the evidence writer's ``refused`` counter, by reason
    (``excerpt_too_large``, ``excerpt_store_error``, ``excerpt_not_written``); ``written``
    counts excerpts filed."""

    def __init__(
        self,
        conn: Any,
        evidence: EvidenceWriter,
        settings: SensorExcerptSettings,
        kinds: Mapping[str, str],
        thresholds: Thresholds | None = None,
        now_s: Callable[[], float] = time.time,
        unsaved: Callable[[str], list[tuple]] = lambda device_id: [],
    ) -> None:
        """``unsaved(device_id)``: the device's readings in batches not committed yet, rows
        as the store's ``(ts, seq, values_json, suspect)``."""
        self._conn = conn
        self._unsaved = unsaved
        self._evidence = evidence
        self._settings = settings
        self._kinds = kinds
        self._thresholds = thresholds
        self._now_s = now_s
        self.written: Counter[str] = Counter()

    def after(self, enrich: Callable[[Alert], Alert]) -> Callable[[Alert], Alert]:
        """``enrich`` (the case dispatch's), then the excerpt: the pipeline's ``enrich``."""

        def enriched(alert: Alert) -> Alert:
            return self.add(enrich(alert))

        return enriched

    def add(self, alert: Alert) -> Alert:
        """The alert with its excerpt's media entry appended, or the alert as it is: not a
        device's, not firing or escalating, already carrying one (a re-filed command's
        alert), or the excerpt refused."""
        if not self._wanted(alert):
            return alert
        try:
            data = self.document(alert)
        except store.DatabaseError:
            self._evidence.refused["excerpt_store_error"] += 1
            return alert
        if data is None:
            self._evidence.refused["excerpt_too_large"] += 1
            return alert
        try:
            entry = self._evidence.save_file(excerpt_name(alert, data), data, int(self._now_s()))
        except OSError:
            self._evidence.refused["excerpt_not_written"] += 1
            return alert
        self.written["written"] += 1
        return replace(alert, media=(*alert.media, entry))

    def _wanted(self, alert: Alert) -> bool:
        return (
            self._settings.enabled
            and alert.state in EXCERPT_STATES
            and alert.source_id in self._kinds
            and not alert.closure_check
            and not any(_EXCERPT_ENTRY.search(entry) for entry in alert.media)
        )

    def document(self, alert: Alert) -> bytes | None:
        """The excerpt's bytes (ASCII JSON), or None when it cannot fit ``max_bytes``."""
        settings = self._settings
        from_ts = max(alert.ts - settings.window_s * 1000, MIN_TS)
        rows = self._conn.execute(
            _RECENT, (alert.source_id, from_ts, alert.ts, settings.max_readings)
        ).fetchall()
        if unsaved := [
            row for row in self._unsaved(alert.source_id) if from_ts <= row[0] < alert.ts
        ]:
            stored = {(row[0], row[1]) for row in rows}
            rows += [row for row in unsaved if (row[0], row[1]) not in stored]
            rows.sort(key=lambda row: row[0], reverse=True)  # a device's ts only grow
            del rows[settings.max_readings :]
        readings = [_dumps(_reading(row)).encode() for row in reversed(rows)]
        kind = alert.kind or self._kinds[alert.source_id]
        head = {
            "format": FORMAT,
            "device_id": _text(alert.source_id, 256),
            "kind": _text(kind, MAX_NAME_CHARS),
            "alert": {
                "key": _text(alert.key, 512),
                "rule_id": _text(alert.rule_id, 256),
                "state": str(alert.state),
                "priority": str(alert.priority),
                "ts": alert.ts,
                "values": clean_values(alert.values),
            },
            "thresholds": self._thresholds(alert) if self._thresholds is not None else None,
            "window": {
                "from_ts": from_ts,
                "to_ts": alert.ts,
                "max_readings": settings.max_readings,
            },
        }
        return fitted(head, readings, settings.max_bytes)


def fitted(head: dict[str, Any], readings: list[bytes], max_bytes: int) -> bytes | None:
    """``head`` with ``readings_left_out`` and the newest of ``readings`` (oldest first) that
    fit in ``max_bytes`` with it; None if the head alone does not fit."""
    # The head with the largest count it may carry: a smaller one is never longer.
    room = max_bytes - len(_framed(head, len(readings), []))
    kept = 0
    for reading in reversed(readings):
        if len(reading) + 2 > room:  # ",\n" or the newlines around the first
            break
        room -= len(reading) + 2
        kept += 1
    if room < 0:
        return None
    left_out = len(readings) - kept
    return _framed(head, left_out, readings[left_out:])


def _framed(head: dict[str, Any], left_out: int, readings: list[bytes]) -> bytes:
    top = _dumps({**head, "readings_left_out": left_out}).encode()
    listed = b"[\n" + b",\n".join(readings) + b"\n]" if readings else b"[]"
    return top[:-1] + b',"readings":' + listed + b"}\n"


def excerpt_name(alert: Alert, data: bytes) -> str:
    """``<key>_<ts>_excerpt_<16 hex of the SHA-256>.json``: a name ``EVIDENCE_NAME`` takes,
    within an upload's 128 characters, and the same for the same document."""
    key = _UNSAFE_NAME.sub("_", alert.key.replace("/", "_"))[:MAX_KEY_CHARS]
    key = "_" + key[1:] if key.startswith(".") else key
    digest = hashlib.sha256(data).hexdigest()[:16]
    return f"{key}_{max(alert.ts, 0)}_excerpt_{digest}.json"


def rule_thresholds(settings: Callable[[], RuleSettings]) -> Thresholds:
    """The params an alert's rule was judged by, from the settings in force when asked (a
    threshold version applied since start is the one shown): a health alert's are the
    device's health params, another's its rule params; None for a kind without them."""

    def thresholds(alert: Alert) -> dict[str, Any] | None:
        current = settings()
        try:
            if "/health/" in alert.key:
                params = device_health_params(current, alert.source_id, alert.kind)
            else:
                params = device_params(current, alert.source_id, alert.kind)
        except (AttributeError, KeyError, ValueError):
            return None
        return params.model_dump(mode="json")

    return thresholds


def clean_values(values: object) -> dict[str, Any] | None:
    """A reading's values as the excerpt shows them (see the module docstring); None for
    something that is no mapping."""
    if not isinstance(values, Mapping):
        return None
    return {
        _text(str(name), MAX_NAME_CHARS): _value(value)
        for name, value in islice(values.items(), MAX_FIELDS)
    }


def _reading(row: tuple) -> dict[str, Any]:
    ts, seq, values_json, suspect = row
    return {
        "ts": _integer(ts),
        "seq": _integer(seq),
        "suspect": bool(suspect) if isinstance(suspect, int) else None,
        "values": clean_values(_parsed(values_json)),
    }


def _parsed(text: object) -> object:
    if not isinstance(text, str) or len(text) > MAX_VALUES_CHARS:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _value(value: object) -> float | int | bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return _integer(value)
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _integer(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and -MAX_INT <= value < MAX_INT:
        return value
    return None


def _text(text: str, limit: int) -> str:
    """``text`` clipped, any lone surrogate replaced: strict JSON readers refuse those."""
    return text[:limit].encode("utf-8", "replace").decode("utf-8")


def _dumps(value: object) -> str:
    return json.dumps(value, **_COMPACT)  # type: ignore[arg-type]
