"""The device fleet simulator against a real mosquitto, checked by an independent reading of
the telemetry contract.

The checker below re-implements the contract's acceptance rules and the gateway's default
rules from their written statement (not from the gateway's code), so that it can tell
whether the builtin scenario really stages what its ``expected`` section claims: exactly
these rejections, and exactly these cases when every good reading is applied.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import shutil
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from simulators.fleet import run_device_simulation, runner
from simulators.fleet.plan import plan_messages
from simulators.mosquitto import Mosquitto, free_port
from simulators.scenario import BUILTIN_SCENARIO, ScenarioError, load_scenario
from simulators.truth import compare_cases, compare_rejections

REGISTRY = BUILTIN_SCENARIO.parent / "devices.csv"
WATER_LEVEL_CLASS = "99101"  # the builtin configuration's local code for 道路积水

# The contract (field -> (low, high) or None for booleans), written out independently.
FIELDS: dict[str, dict[str, tuple[float, float] | None]] = {
    "manhole_cover": {"tilt_deg": (0, 180), "lid_open": None, "battery_pct": (0, 100)},
    "bin": {"fill_pct": (0, 100), "battery_pct": (0, 100)},
    "water_level": {"level_cm": (0, math.inf), "battery_pct": (0, 100)},
}
REQUIRED = {
    "manhole_cover": {"tilt_deg", "lid_open"},
    "bin": {"fill_pct"},
    "water_level": {"level_cm"},
}
TO_CM = {"cm": 1.0, "mm": 0.1, "m": 100.0}


# --- a real broker ------------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path):
    server = Mosquitto(tmp_path, persistence=False)
    server.start()
    yield server
    server.stop()


MARKER_TOPIC = "test/marker"


class Recorder:
    """A bare paho subscriber recording (device id, payload, receipt wall ms)."""

    def __init__(self, port: int) -> None:
        self.received: list[tuple[str, bytes, int]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._marker = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="truth-recorder")
        self.client.on_connect = lambda c, *_: c.subscribe(
            [("citygw/v1/+/telemetry", 1), (MARKER_TOPIC, 1)]
        )
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(30), "recorder could not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        if message.topic == MARKER_TOPIC:
            self._marker.set()
            return
        now_ms = time.time_ns() // 1_000_000
        device_id = message.topic.split("/")[2]
        with self._lock:
            self.received.append((device_id, message.payload, now_ms))

    def wait_for(self, count: int, timeout_s: float) -> list[tuple[str, bytes, int]]:
        """Everything received once ``count`` messages are in, including any duplicate the
        broker had queued for us: a marker published now reaches us after all of those."""
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        self.client.publish(MARKER_TOPIC, b"", qos=1)
        assert self._marker.wait(max(1.0, deadline - time.monotonic())), "no marker came back"
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- an independent reading of the contract -----------------------------------------------


def load_rows() -> dict[str, dict[str, str]]:
    with REGISTRY.open(encoding="utf-8") as handle:
        return {row["device_id"]: row for row in csv.DictReader(handle)}


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def classify(kind: str | None, payload: bytes, receipt_ms: int, last: dict[str, Any] | None):
    """(verdict, ts, seq, decoded values): verdict is "ok" or the rejection reason."""
    try:
        body = json.loads(payload.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        return "malformed_json", None, None, None
    if kind is None:
        return "unknown_device", None, None, None
    ts, seq, values = (
        (body.get(k) for k in ("ts", "seq", "values")) if isinstance(body, dict) else (None,) * 3
    )
    if not (isinstance(ts, int) and not isinstance(ts, bool) and isinstance(values, dict)):
        return "bad_schema", None, None, None
    if set(values) - FIELDS[kind].keys() or REQUIRED[kind] - set(values):
        return "bad_schema", ts, seq, None
    decoded: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, dict):
            if value.keys() != {"value", "unit"} or not _number(value["value"]):
                return "bad_schema", ts, seq, None
            if name != "level_cm" or value["unit"] not in TO_CM:
                return "bad_unit", ts, seq, None
            value = value["value"] * TO_CM[value["unit"]]
        bounds = FIELDS[kind][name]
        if (bounds is None) != isinstance(value, bool) or (bounds and not _number(value)):
            return "bad_schema", ts, seq, None
        if bounds and not bounds[0] <= value <= bounds[1]:
            return "out_of_range", ts, seq, None
        decoded[name] = value
    if ts > receipt_ms + 300_000:
        return "future_timestamp", ts, seq, None
    if last is not None and ts <= last["ts"]:
        return ("duplicate" if seq in last["seqs"] else "stale"), ts, seq, None
    return "ok", ts, seq, decoded


def distance_m(a: dict[str, str], b: dict[str, str]) -> float:
    lat1, lon1, lat2, lon2 = (
        math.radians(float(x)) for x in (a["lat"], a["lon"], b["lat"], b["lon"])
    )
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


def device_transition(row: dict[str, str], st: dict[str, Any], ts: int, v: dict[str, Any]):
    """The gateway's default rule applied to one reading, on event time.

    Returns None or (event, class code, priority), event being fire, escalate or clear."""

    def held(name: str, condition: bool, seconds: float) -> bool:
        if not condition:
            st.pop(name, None)
            return False
        return ts - st.setdefault(name, ts) >= seconds * 1000

    firing = st.get("priority")
    if row["kind"] == "manhole_cover":
        active = v["lid_open"] or held("tilt", v["tilt_deg"] >= 15, 5)
        calm = held("calm", not v["lid_open"] and v["tilt_deg"] < 5, 60)
        event = ("fire", row["part_code"][6:11], "critical") if not firing and active else None
        return ("clear", None, None) if firing and calm else event
    if row["kind"] == "bin":
        if not firing and held("full", v["fill_pct"] >= 90, 600):
            return "fire", "06042", "urgent"
        return ("clear", None, None) if firing and v["fill_pct"] < 60 else None
    warning = held("warning", v["level_cm"] >= float(row["warning_cm"]), 60)
    alarm = held("alarm", v["level_cm"] >= float(row["alarm_cm"]), 10)
    if not firing and warning:
        return "fire", WATER_LEVEL_CLASS, "urgent"
    if firing == "urgent" and alarm:
        return "escalate", WATER_LEVEL_CLASS, "critical"
    return ("clear", None, None) if firing and v["level_cm"] < float(row["warning_cm"]) else None


def reference_cases(readings: list[tuple[str, int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Cases the contract's rules and 50 m same-class merge make of the accepted readings."""
    rows = load_rows()
    states: dict[str, dict[str, Any]] = defaultdict(dict)
    incidents: list[dict[str, Any]] = []
    for device_id, ts, values in readings:
        outcome = device_transition(rows[device_id], states[device_id], ts, values)
        if outcome is None:
            continue
        event, class_code, priority = outcome
        if event == "fire":
            states[device_id]["priority"] = priority
            home = next(
                (
                    i
                    for i in incidents
                    if i["active"]
                    and i["class_code"] == class_code
                    and distance_m(rows[i["first"]], rows[device_id]) <= 50
                ),
                None,
            )
            if home is None:
                home = {
                    "class_code": class_code,
                    "first": device_id,
                    "devices": set(),
                    "active": set(),
                }
                home["priority"] = priority
                incidents.append(home)
            home["devices"].add(device_id)
            home["active"].add(device_id)
        else:
            home = next(i for i in incidents if device_id in i["active"])
            if event == "escalate":
                states[device_id]["priority"] = home["priority"] = priority
            else:
                states[device_id].pop("priority")
                home["active"].discard(device_id)
    return [
        {
            "id": f"REF-{n}",
            "class_code": i["class_code"],
            "priority": i["priority"],
            "evidence": [{"source_id": d} for d in sorted(i["devices"])],
        }
        for n, i in enumerate(incidents, start=1)
    ]


# --- the run over a real broker -----------------------------------------------------------


def test_builtin_scenario_over_mosquitto(broker: Mosquitto, tmp_path: Path) -> None:
    recorder = Recorder(broker.port)
    truth_path = tmp_path / "truth.json"
    progress: list[tuple[int, int]] = []
    try:
        truth = run_device_simulation(
            broker.url,
            str(BUILTIN_SCENARIO),
            str(truth_path),
            time_scale=600,
            on_progress=lambda sent, total: progress.append((sent, total)),
        )
        received = recorder.wait_for(truth["published"], timeout_s=30)
    finally:
        recorder.close()

    assert json.loads(truth_path.read_text(encoding="utf-8")) == truth
    assert truth["finished"] is True
    assert truth["event_end_ms"] - truth["event_start_ms"] == 1_800_000
    assert progress[-1] == (truth["published"], truth["published"])
    assert len(received) == truth["published"]

    kinds = {d: row["kind"] for d, row in load_rows().items()}
    guard: dict[str, dict[str, Any]] = {}
    verdicts: Counter[str] = Counter()
    accepted: list[tuple[str, int, dict[str, Any]]] = []
    newest: dict[str, int] = {}
    out_of_order = 0
    for device_id, payload, receipt_ms in received:
        verdict, ts, seq, values = classify(
            kinds.get(device_id), payload, receipt_ms, guard.get(device_id)
        )
        verdicts[verdict] += 1
        if device_id in kinds and ts is not None and verdict != "future_timestamp":
            out_of_order += ts <= newest.get(device_id, -1)
            newest[device_id] = max(ts, newest.get(device_id, -1))
        if verdict != "ok":
            continue
        assert ts <= receipt_ms, f"{device_id} reading ahead of the wall clock"
        assert truth["event_start_ms"] <= ts < truth["event_end_ms"]
        last = guard.get(device_id)
        assert isinstance(seq, int) and seq > (last["seqs"][-1] if last else 0)
        guard[device_id] = {"ts": ts, "seqs": [*(last["seqs"] if last else []), seq]}
        accepted.append((device_id, ts, values))

    rejections = {reason: n for reason, n in verdicts.items() if reason != "ok"}
    assert compare_rejections(truth, rejections) == {}
    assert sum(rejections.values()) == 11
    assert (
        out_of_order
        == truth["expected_rejections"]["duplicate"] + truth["expected_rejections"]["stale"]
        == 5
    )
    assert {d for d, _, _ in accepted} == set(kinds)
    assert all(guard[d]["seqs"][0] == 1 for d in kinds)

    report = compare_cases(truth, reference_cases(accepted))
    assert report.ok, report.render()
    assert len(report.matched) == 5


def test_fleet_rides_out_a_broker_restart(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    planned = len(plan_messages(load_scenario(BUILTIN_SCENARIO), seed=1))
    result: dict[str, Any] = {}
    publishing = threading.Event()

    def progress(sent: int, total: int) -> None:
        if sent < total:
            publishing.set()

    def run() -> None:
        result["truth"] = run_device_simulation(
            broker.url,
            str(BUILTIN_SCENARIO),
            str(tmp_path / "truth.json"),
            time_scale=600,
            on_progress=progress,
        )

    runner = threading.Thread(target=run)
    runner.start()
    assert publishing.wait(30), "the fleet never started publishing"
    broker.stop()  # mid-run: messages published from now on queue in paho
    deadline = time.monotonic() + 30
    while "lost the broker" not in caplog.text:  # the fleet noticed
        assert time.monotonic() < deadline, "the fleet did not notice the broker going"
        time.sleep(0.05)
    broker.start()
    runner.join(timeout=90)
    assert not runner.is_alive()
    # run_device_simulation returns only once the broker acknowledged every message.
    assert result["truth"]["finished"] is True
    assert result["truth"]["published"] == planned


def test_unreachable_broker_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "CONNECT_TIMEOUT_S", 0.5)
    with pytest.raises(ConnectionError):
        run_device_simulation(
            f"mqtt://u:p@127.0.0.1:{free_port()}", str(BUILTIN_SCENARIO), str(tmp_path / "t.json")
        )


# --- the plan and the scenario file, without a broker --------------------------------------


def test_plan_is_seeded_and_stages_exactly_the_declared_faults() -> None:
    scenario = load_scenario(BUILTIN_SCENARIO)
    first = plan_messages(scenario, seed=1)
    assert first == plan_messages(scenario, seed=1)
    assert first != plan_messages(scenario, seed=2)
    staged = Counter(m.purpose for m in first if m.purpose != "reading")
    declared = {r: n for r, n in scenario.expected_truth()["expected_rejections"].items() if n}
    assert staged == declared
    assert [m.offset_ms for m in first] == sorted(m.offset_ms for m in first)
    # MH-002 is the near miss: never two consecutive readings at or over 15 degrees.
    tilts = [
        m.values["tilt_deg"] for m in first if m.device_id == "MH-002" and m.purpose == "reading"
    ]
    assert max(tilts) >= 15.5
    assert not any(a >= 15 and b >= 15 for a, b in itertools.pairwise(tilts))


def test_registry_follows_the_contract() -> None:
    header = REGISTRY.read_text(encoding="utf-8").splitlines()[0]
    assert header == "device_id,kind,lat,lon,address,grid_code,part_code,warning_cm,alarm_cm"
    part_types = {"manhole_cover": {"01001", "01003"}, "bin": {"03005"}, "water_level": {"01067"}}
    for row in load_rows().values():
        assert row["part_code"].isdigit() and len(row["part_code"]) == 17
        assert row["part_code"][:6] == "350102"
        assert row["part_code"][6:11] in part_types[row["kind"]]
        assert row["grid_code"].isdigit() and len(row["grid_code"]) == 15
        assert row["address"].startswith("福州市鼓楼区")
        assert bool(row["warning_cm"]) == bool(row["alarm_cm"]) == (row["kind"] == "water_level")


def test_scenario_errors_name_file_line_and_field(tmp_path: Path) -> None:
    shutil.copy(REGISTRY, tmp_path / "devices.csv")
    text = BUILTIN_SCENARIO.read_text(encoding="utf-8")
    broken = text.replace("{at: 700, spike: 95}", "{at: 700, spike: 95, ramp_to: 3}")
    broken = broken.replace("device: BIN-012, at: 203", "device: BIN-099, at: 203")
    (tmp_path / "scenario.yaml").write_text(broken, encoding="utf-8")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(tmp_path / "scenario.yaml")
    message = str(caught.value)
    spike_line = broken.splitlines().index("          - {at: 700, spike: 95, ramp_to: 3}") + 1
    assert f"scenario.yaml:{spike_line}: devices.BIN-001.fields.fill_pct.changes.0" in message
    (tmp_path / "scenario.yaml").write_text(
        text.replace("device: BIN-012, at: 203", "device: BIN-099, at: 203"), encoding="utf-8"
    )
    with pytest.raises(ScenarioError, match=r"faults\.6\.device: device is not in the registry"):
        load_scenario(tmp_path / "scenario.yaml")


# --- comparing filed cases with the truth --------------------------------------------------


TRUTH = {
    "expected_cases": [
        {"label": "lid", "class_code": "01003", "priority": "critical", "devices": ["MH-001"]},
        {
            "label": "bins",
            "class_code": "06042",
            "priority": "urgent",
            "devices": ["BIN-010", "BIN-011", "BIN-012"],
        },
    ],
    "expected_rejections": {"duplicate": 3, "stale": 2, "bad_unit": 0},
}


def case(case_id: str, class_code: str, priority: str, *devices: str) -> dict[str, Any]:
    return {
        "id": case_id,
        "class_code": class_code,
        "priority": priority,
        "evidence": [{"source_id": d, "kind": "reading"} for d in devices],
    }


def test_compare_cases_exact_match() -> None:
    filed = [
        case("C-2", "06042", "urgent", "BIN-012", "BIN-010", "BIN-011", "BIN-010"),
        case("C-1", "01003", "critical", "MH-001"),
    ]
    report = compare_cases(TRUTH, filed)
    assert report.ok
    assert [(m.label, m.case_id) for m in report.matched] == [("lid", "C-1"), ("bins", "C-2")]
    assert "PASS" in report.render()


def test_compare_cases_case_missing_a_device() -> None:
    filed = [
        case("C-1", "01003", "critical", "MH-001"),
        case("C-2", "06042", "urgent", "BIN-010", "BIN-011"),
    ]
    report = compare_cases(TRUTH, filed)
    assert not report.ok
    assert [label for label, _ in report.missing] == ["bins"]
    assert [(cid, key.devices) for cid, key in report.extra] == [("C-2", ("BIN-010", "BIN-011"))]
    rendered = report.render()
    assert "MISSING" in rendered and "EXTRA" in rendered and "FAIL" in rendered


def test_compare_cases_extra_case_and_wrong_priority() -> None:
    filed = [
        case("C-1", "01003", "critical", "MH-001"),
        case("C-2", "06042", "urgent", "BIN-010", "BIN-011", "BIN-012"),
        case("C-3", "06042", "urgent", "BIN-001"),
    ]
    report = compare_cases(TRUTH, filed)
    assert not report.ok and not report.missing
    assert [cid for cid, _ in report.extra] == ["C-3"]
    downgraded = compare_cases(TRUTH, [*filed[1:2], case("C-1", "01003", "urgent", "MH-001")])
    assert [label for label, _ in downgraded.missing] == ["lid"]
    assert len(downgraded.extra) == 1


def test_compare_rejections_reports_only_differences() -> None:
    assert compare_rejections(TRUTH, {"duplicate": 3, "stale": 2}) == {}
    assert compare_rejections(TRUTH, {"duplicate": 4, "stale": 2, "unknown_device": 1}) == {
        "duplicate": (3, 4),
        "unknown_device": (0, 1),
    }
