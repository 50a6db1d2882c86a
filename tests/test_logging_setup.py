"""Structured logs: one JSON object per line with the device, camera and incident ids a log
call gives, chosen by ``--log-format`` or ``$CITYGW_LOG_FORMAT``; whatever a message holds,
the line stays one valid JSON object. The logging set-up runs for real in a child process
(under pytest the root logger already has handlers, which ``configure`` leaves alone)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from scripted_platform import TOKEN, Reply

from case_bridge import outbox
from case_bridge.codes import ClassCatalog
from case_bridge.dispatcher import OutboxDispatcher
from case_bridge.platform import BundledPlatform
from case_bridge.settings import CaseSettings, RetryPolicy
from domain import Alert, AlertState, CaseCommand, CommandKind, Location, Priority, Reading
from gateway.logging_setup import ID_FIELDS, MAX_MESSAGE_CHARS, JsonFormatter
from rules.device_health import DeviceHealth
from rules.flow import AlertFlow
from rules.incidents import IncidentBook, MergePolicy
from rules.params import HealthConfig, KindHealthParams
from rules.settings import KindSettings, RuleSettings

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import argparse, logging, sys
from gateway.logging_setup import add_logging_arguments, configure
parser = argparse.ArgumentParser()
add_logging_arguments(parser)
args = parser.parse_args(sys.argv[1:])
configure(args.log_format)
log = logging.getLogger("case_bridge.dispatcher")
log.warning("case command %s parked: %s", "INC-7/1", "HTTP 422\\nsecond line",
            extra={"incident_id": "INC-7"})
logging.getLogger("httpx").info("one line per request: kept out")
logging.getLogger("gateway.video").debug("debug: not at the default level")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("gateway.video").exception("analysis failed", extra={"camera_id": "CAM-1"})
"""


def child(*args: str, log_format_env: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CITYGW_LOG_FORMAT"}
    if log_format_env is not None:
        env["CITYGW_LOG_FORMAT"] = log_format_env
    return subprocess.run(
        [sys.executable, "-c", CHILD, *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


def test_json_from_the_environment_one_object_per_line_with_the_ids_given():
    done = child(log_format_env="json")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2  # httpx's INFO and the DEBUG line are not logged
    parked, failed = (json.loads(line) for line in lines)
    assert list(parked) == ["ts", "level", "logger", "message", "incident_id"]
    assert parked["level"] == "WARNING" and parked["logger"] == "case_bridge.dispatcher"
    assert parked["message"] == "case command INC-7/1 parked: HTTP 422\nsecond line"
    assert parked["incident_id"] == "INC-7"
    assert parked["ts"].endswith("Z")
    assert abs(time.time() - datetime.fromisoformat(parked["ts"]).timestamp()) < 60
    assert (failed["level"], failed["camera_id"]) == ("ERROR", "CAM-1")
    assert "device_id" not in failed and "incident_id" not in failed
    assert failed["exc"].endswith("ZeroDivisionError: division by zero")


def test_the_flag_wins_over_the_environment_and_text_is_the_default():
    for done in (child("--log-format", "text", log_format_env="json"), child()):
        assert done.returncode == 0, done.stderr
        first = done.stderr.splitlines()[0]
        assert " WARNING case_bridge.dispatcher: case command INC-7/1 parked: HTTP 422" in first


def test_an_unknown_format_stops_the_start_with_the_reason():
    for done in (child(log_format_env="yaml"), child("--log-format", "xml")):
        assert done.returncode == 2
        assert "log format must be one of text, json (flag or $CITYGW_LOG_FORMAT)" in done.stderr


def record(message: str, args: tuple = (), **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("gateway.test", logging.INFO, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


@settings(max_examples=50, deadline=None)
@given(
    message=st.text(max_size=MAX_MESSAGE_CHARS + 50),
    ids=st.dictionaries(st.sampled_from(ID_FIELDS), st.text(max_size=300) | st.integers()),
)
def test_any_message_and_ids_make_one_line_of_json_that_reads_back(message, ids):
    line = JsonFormatter().format(record("%s", (message,), **ids))
    assert "\n" not in line and line.isascii()
    entry = json.loads(line)
    expected = message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS]
    assert entry["message"].startswith(expected)
    assert len(entry["message"]) <= MAX_MESSAGE_CHARS + 32
    for field, value in ids.items():
        assert entry[field].startswith(str(value)[:256])
    assert [k for k in entry if k in ID_FIELDS] == [f for f in ID_FIELDS if f in ids]


def test_the_dispatcher_names_the_incident_of_a_parked_command(tmp_path, fake, caplog):
    """A real dispatcher, a platform on loopback refusing the case (422): the log record
    of the parked command carries its incident id, and its JSON line shows it."""
    conn = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
    outbox.ensure_schema(conn)
    alert = Alert(
        key="WL-001/water_high", source_id="WL-001", rule_id="water_high",
        state=AlertState.FIRING, class_code="99101", priority=Priority.NORMAL,
        location=Location(31.29, 120.58), ts=1_763_700_000_000,
    )  # fmt: skip
    with conn:
        command = CaseCommand("INC-42/1", "INC-42", CommandKind.OPEN, alert, alert.priority)
        outbox.enqueue(conn, command, int(time.time() * 1000))
    fake.script(Reply(422, {"detail": "class_code: unknown"}))
    cases = CaseSettings()
    dispatcher = OutboxDispatcher(
        conn, BundledPlatform(fake.url, TOKEN, timeout_s=5), ClassCatalog(cases.local_classes),
        cases, RetryPolicy(initial_s=0.02, max_s=0.05), lambda *_: False,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="case_bridge.dispatcher"):
        asyncio.run(dispatcher.drain_once())
    [parked] = [r for r in caplog.records if "parked" in r.getMessage()]
    entry = json.loads(JsonFormatter().format(parked))
    assert (entry["level"], entry["incident_id"]) == ("ERROR", "INC-42")
    assert entry["message"].startswith("case command INC-42/1 parked: HTTP 422")
    conn.close()


# -- the ids the rules give ------------------------------------------------------------------

HERE = Location(26.087, 119.302, "五四路", "350102001001001")
T0 = 1_763_700_000_000


def _json_lines(records: list[logging.LogRecord]) -> list[dict]:
    return [json.loads(JsonFormatter().format(r)) for r in records]


def _health(log_changes: bool = True) -> DeviceHealth:
    params = KindHealthParams(heartbeat_s=60, stuck_after_s={"level_cm": 600.0})
    settings = RuleSettings(kinds=KindSettings(health=HealthConfig(water_level=params)))
    health = DeviceHealth(settings, log_changes=log_changes)
    health.add_device("WL-1", "water_level", HERE, "")
    health.start(T0)
    return health


def _level(ts: int, level: float) -> Reading:
    return Reading("WL-1", "water_level", ts, {"level_cm": level})


def _health_changes(health: DeviceHealth) -> None:
    """Offline, back, stuck (suspect), believed again."""
    health.tick(T0 + 180_000)
    health.check(_level(T0 + 200_000, 5.0), T0 + 200_000)
    health.check(_level(T0 + 900_000, 5.0), T0 + 900_000)  # the same for 700 s: stuck
    health.check(_level(T0 + 960_000, 6.0), T0 + 960_000)


def test_device_health_logs_each_offline_and_suspect_change_with_the_device(caplog):
    with caplog.at_level(logging.INFO, logger="rules.device_health"):
        _health_changes(_health())
    lines = _json_lines([r for r in caplog.records if r.name == "rules.device_health"])
    assert [(line["device_id"], line["message"]) for line in lines] == [
        ("WL-1", "device WL-1 offline: no reading, silent 180 s"),
        ("WL-1", "device WL-1 online again: a reading came"),
        ("WL-1", "device WL-1 suspect: level_cm stuck at 5 for 0.2 h"),
        ("WL-1", "device WL-1 believed again: readings plausible"),
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rules.device_health"):
        _health_changes(_health(log_changes=False))  # a backtest's replay
    assert [r for r in caplog.records if r.name == "rules.device_health"] == []


def _alert(source: str, state: AlertState, ts: int, origin: str = "iot") -> Alert:
    return Alert(
        key=f"{source}/rule", source_id=source, rule_id="rule", state=state, class_code="06042",
        priority=Priority.NORMAL, location=HERE, ts=ts, origin=origin,
    )  # fmt: skip


def _flow_lines(caplog, log_changes: bool) -> tuple[list, list[dict]]:
    """A sensor's alert filed, a camera's filed, the sensor's cleared: what was handled and
    the JSON lines logged."""
    flow = AlertFlow(IncidentBook(MergePolicy(50, 86_400_000)), log_changes=log_changes)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rules.flow"):
        handled = flow.handle([
            _alert("BIN-1", AlertState.FIRING, T0),
            _alert("CAM-1", AlertState.FIRING, T0 + 1, origin="video"),
            _alert("BIN-1", AlertState.CLEARED, T0 + 2),
        ])  # fmt: skip
    return handled, _json_lines([r for r in caplog.records if r.name == "rules.flow"])


def test_the_alert_flow_logs_each_alert_filed_or_cleared_with_its_source_and_incident(caplog):
    handled, lines = _flow_lines(caplog, log_changes=True)
    bin_incident, camera_incident = handled[0].incident_id, handled[1].incident_id
    assert bin_incident and camera_incident  # the camera's joins it: one place, one class
    ids = [{k: v for k, v in line.items() if k in ID_FIELDS} for line in lines]
    assert ids == [
        {"device_id": "BIN-1", "incident_id": bin_incident},
        {"camera_id": "CAM-1", "incident_id": camera_incident},
        {"device_id": "BIN-1", "incident_id": bin_incident},
    ]
    assert [line["message"] for line in lines] == [
        f"alert BIN-1/rule firing: incident {bin_incident}",
        f"alert CAM-1/rule firing: incident {camera_incident}",
        f"alert BIN-1/rule cleared: incident {bin_incident}",
    ]
    assert _flow_lines(caplog, log_changes=False)[1] == []  # a backtest's replay
