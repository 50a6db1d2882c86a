"""Serial adapters on real ptys (the simulator's null modem) against the simulated devices:
line noise and bad checksums counted and skipped, scaled Modbus registers read through
pymodbus's own server, a dead slave that does not slow the live ones, a port pulled out and
put back, and the builtin serial scenario played through the gateway's side."""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections.abc import Callable

import pytest
import serial

from devices.fleet.binary import crc16_modbus
from devices.registry import Device, load_registry
from devices.rejections import Reason, Rejection
from devices.serial import SerialSettings, start_serial
from domain import Location, Reading
from simulators.serial.clock import EventClock
from simulators.serial.modbus_devices import ModbusBus
from simulators.serial.null_modem import NullModem
from simulators.serial.runner import SerialSimulation
from simulators.serial.scenario import (
    BUILTIN_SERIAL_SCENARIO,
    Bus,
    Samples,
    load_serial_scenario,
)
from simulators.serial.sentences import sentence

HERE = Location(26.08, 119.3)
LEVELS = {"warning_cm": "30", "alarm_cm": "50"}
REGISTRY = {
    "WL-1": Device("WL-1", "water_level", HERE, overrides=LEVELS),
    "WL-2": Device("WL-2", "water_level", HERE, overrides=LEVELS),
    "WL-3": Device("WL-3", "water_level", HERE, overrides=LEVELS),
    "MH-1": Device("MH-1", "manhole_cover", HERE),
    "BIN-1": Device("BIN-1", "bin", HERE),
}
LEVEL_AT_0 = [{"field": "level_cm", "address": 0, "function": "input", "scale": 0.1}]


class Results:
    """What the adapters handed over, from their threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[float, Reading | Rejection]] = []

    def __call__(self, origin: str, raw: bytes, result: Reading | Rejection) -> None:
        with self._lock:
            self.items.append((time.monotonic(), result))

    def readings(self, device_id: str | None = None) -> list[Reading]:
        with self._lock:
            return [
                r
                for _, r in self.items
                if isinstance(r, Reading) and device_id in (None, r.device_id)
            ]

    def arrival_times(self, device_id: str) -> list[float]:
        with self._lock:
            return [t for t, r in self.items if isinstance(r, Reading) and r.device_id == device_id]

    def rejections(self) -> list[Rejection]:
        with self._lock:
            return [r for _, r in self.items if isinstance(r, Rejection)]


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def cable(tmp_path):
    with NullModem(tmp_path / "bus") as modem:
        yield modem


def line_port(path: str) -> dict:
    return {"path": path, "framing": "line", "reconnect_s": 0.1, "reconnect_max_s": 0.5}


def modbus_port(path: str, slaves: list[dict]) -> dict:
    return {
        "path": path,
        "framing": "modbus",
        "slaves": slaves,
        "reconnect_s": 0.1,
        "reconnect_max_s": 0.5,
        "down_backoff_s": 1.0,
        "down_backoff_max_s": 2.0,
    }


def slave(unit: int, device: str, registers: list[dict], **poll) -> dict:
    return {"unit": unit, "device": device, "registers": registers, **poll}


def start_slaves(path: str, slaves: list[dict], samples: dict[str, Samples]) -> ModbusBus:
    """The simulator's Modbus bus (pymodbus server) with the same register maps."""
    layout = Bus.model_validate({"name": "bus", "framing": "modbus", "slaves": slaves})
    bus = ModbusBus(path, layout, samples, EventClock(1.0))
    bus.start()
    return bus


def connected(adapters, path: str) -> Callable[[], bool]:
    return lambda: adapters.stats()[path]["connected"]


def test_line_reader_counts_and_skips_noise_and_bad_checksums(cable):
    results = Results()
    settings = SerialSettings.model_validate({"ports": [line_port(cable.gateway_path)]})
    adapters = start_serial(settings, REGISTRY, results)
    try:
        wait_until(connected(adapters, cable.gateway_path), "the port to open")
        good = sentence("water_level", "WL-1", {"level_cm": 10.0, "battery_pct": 90.0})
        bin_line = sentence("bin", "BIN-1", {"fill_pct": 55.5})
        stream = (
            b"\x00\x13 noise "  # 9 bytes of noise before the first sentence
            + good
            + sentence("water_level", "WL-1", {"level_cm": 11.0}, corrupt=True)
            + b"$"
            + b"A" * 300
            + b"\r\n"  # overlong
            + bin_line[:10]  # cut short by the next sentence
            + sentence("manhole_cover", "MH-1", {"tilt_deg": 2.0, "lid_open": True})
            + sentence("bin", "WL-1", {"fill_pct": 5.0})  # a bin sentence from a gauge
            + bin_line
        )
        with serial.Serial(cable.devices_path, timeout=1) as device:
            for at in range(0, len(stream), 37):  # in pieces, as a UART delivers them
                device.write(stream[at : at + 37])
            wait_until(lambda: len(results.readings()) == 3, "three readings")
            wait_until(lambda: len(results.rejections()) == 5, "five rejections")
        stats = adapters.stats()[cable.gateway_path]
    finally:
        adapters.stop()
    assert [r.values for r in results.readings()] == [
        {"level_cm": 10.0, "battery_pct": 90.0},
        {"tilt_deg": 2.0, "lid_open": True},
        {"fill_pct": 55.5},
    ]
    assert stats["rejections"] == {"garbage": 3, "bad_checksum": 1, "bad_schema": 1}
    assert stats["readings"] == 3
    assert stats["garbage_bytes"] == 9 + 302 + 10  # the overlong line: "$", 300 "A", "\r"
    assert stats["reconnects"] == 0


def test_modbus_poller_reads_scaled_registers_from_a_real_pymodbus_server(cable):
    slaves = [
        slave(
            1, "WL-1", [*LEVEL_AT_0, {"field": "battery_pct", "address": 1, "function": "input"}]
        ),
        slave(
            2,
            "WL-2",
            [
                {
                    "field": "level_cm",
                    "address": 100,
                    "type": "float32",
                    "word_order": "little",
                    "unit": "m",
                },
                {"field": "battery_pct", "address": 102, "scale": 0.5},
            ],
        ),
        slave(
            7,
            "MH-1",
            [
                {"field": "tilt_deg", "address": 0, "type": "int16", "scale": 0.1, "offset": 10},
                {"field": "lid_open", "address": 3, "function": "coil", "type": "bool"},
            ],
        ),
    ]
    samples = {
        "WL-1": Samples(1000, [{"level_cm": 42.5, "battery_pct": 90.0}]),
        "WL-2": Samples(1000, [{"level_cm": 12.25, "battery_pct": 77.5}]),
        "MH-1": Samples(1000, [{"tilt_deg": 3.5, "lid_open": True}]),
    }
    polled = [{**s, "poll_s": 0.2, "timeout_s": 0.2} for s in slaves]
    bus = start_slaves(cable.devices_path, slaves, samples)
    results = Results()
    settings = SerialSettings.model_validate({"ports": [modbus_port(cable.gateway_path, polled)]})
    adapters = start_serial(settings, REGISTRY, results)
    try:
        wait_until(lambda: {r.device_id for r in results.readings()} == set(samples), "readings")
    finally:
        adapters.stop()
        bus.stop()
    latest = {r.device_id: r.values for r in results.readings()}
    assert latest == {device: rows.rows[0] for device, rows in samples.items()}
    assert results.rejections() == []


class ShortReplySlaveFake:
    """A fake Modbus RTU slave, scripted to misbehave as no pymodbus server will: it answers
    every register read one register short, in a well-formed frame with a valid CRC."""

    def __init__(self, path: str) -> None:
        self._port = serial.Serial(path, timeout=0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="short-reply slave")
        self._thread.start()

    def _serve(self) -> None:
        request = b""
        while not self._stop.is_set():
            request = (request + self._port.read(8))[-8:]
            if len(request) < 8 or crc16_modbus(request[:6]) != int.from_bytes(
                request[6:], "little"
            ):
                continue
            unit, function, count = request[0], request[1], int.from_bytes(request[4:6], "big")
            body = bytes([unit, function, 2 * (count - 1)]) + b"\x01\xa4" * (count - 1)  # 42.0
            self._port.write(body + crc16_modbus(body).to_bytes(2, "little"))
            request = b""

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._port.close()


def test_a_reply_shorter_than_asked_is_a_dead_letter_and_a_failed_poll(cable):
    registers = [*LEVEL_AT_0, {"field": "battery_pct", "address": 1, "function": "input"}]
    polled = slave(1, "WL-1", registers, poll_s=0.1, timeout_s=0.2, retries=1)
    fake = ShortReplySlaveFake(cable.devices_path)
    dead_letters: list[tuple[str, bytes, Reading | Rejection]] = []
    port = modbus_port(cable.gateway_path, [polled]) | {
        "down_backoff_s": 60,
        "down_backoff_max_s": 60,
    }
    settings = SerialSettings.model_validate({"ports": [port]})
    adapters = start_serial(settings, REGISTRY, lambda *result: dead_letters.append(result))
    try:
        wait_until(lambda: adapters.stats()[cable.gateway_path]["slaves"]["WL-1"]["down"], "down")
        stats = adapters.stats()[cable.gateway_path]["slaves"]["WL-1"]
    finally:
        adapters.stop()
        fake.close()
    # Two tries (retries = 1), each answered short: two dead letters, two failures, no OK.
    assert (stats["ok"], stats["failures"], stats["times_down"]) == (0, 2, 1)
    assert stats["rejections"] == {"bad_schema": 2}
    origin = f"modbus:{cable.gateway_path}#1"
    rejection = Rejection(Reason.BAD_SCHEMA, "the reply to input 0+2 holds 1 of 2", "WL-1")
    assert dead_letters == [(origin, b"[[420]]", rejection)] * 2


def live_intervals(cable, with_dead_slave: bool, seconds: float = 4.0) -> tuple[dict, dict]:
    """Run two live slaves (and maybe a dead one) for ``seconds``; the live slaves'
    reading intervals and the port's stats."""
    poll = {"poll_s": 0.25, "timeout_s": 0.15, "retries": 2}
    live = [slave(1, "WL-1", LEVEL_AT_0), slave(2, "WL-2", LEVEL_AT_0)]
    samples = {d: Samples(1000, [{"level_cm": 20.0}]) for d in ("WL-1", "WL-2", "WL-3")}
    polled = [{**s, **poll} for s in live]
    if with_dead_slave:  # configured at the gateway, absent from the bus
        polled.append({**slave(3, "WL-3", LEVEL_AT_0), **poll})
    bus = start_slaves(cable.devices_path, live, samples)
    results = Results()
    settings = SerialSettings.model_validate({"ports": [modbus_port(cable.gateway_path, polled)]})
    adapters = start_serial(settings, REGISTRY, results)
    time.sleep(seconds)
    stats = adapters.stats()[cable.gateway_path]
    adapters.stop()
    bus.stop()
    intervals = {}
    for device in ("WL-1", "WL-2"):
        times = results.arrival_times(device)
        intervals[device] = [b - a for a, b in itertools.pairwise(times)]
    return intervals, stats


def test_a_dead_slave_does_not_stretch_the_live_slaves_poll_period(cable):
    alone, _ = live_intervals(cable, with_dead_slave=False)
    beside_dead, stats = live_intervals(cable, with_dead_slave=True)
    timeout_s = 0.15
    for device in ("WL-1", "WL-2"):
        baseline, measured = alone[device], beside_dead[device]
        assert len(measured) >= 0.9 * len(baseline), (device, len(baseline), len(measured))
        # Same period on average (phase is kept, a delay is caught up on the next poll) ...
        assert statistics.mean(measured) == pytest.approx(statistics.mean(baseline), rel=0.1)
        # ... and no interval stretched by more than one timeout of the dead neighbour
        # (a fixed cycle would add retries + 1 timeouts to every interval).
        assert max(measured) <= max(baseline) + timeout_s + 0.05, (device, max(measured))
    dead = stats["slaves"]["WL-3"]
    assert dead["down"] and dead["times_down"] == 1 and dead["ok"] == 0
    # Three tries (retries = 2) to be declared down, then one probe per back-off
    # (0.5–1 s, then 1–2 s: equal jitter below the 1 s and 2 s ceilings).
    assert 3 <= dead["failures"] <= 6, dead


def test_unplugged_line_port_is_reopened_and_reading_resumes(cable):
    results = Results()
    settings = SerialSettings.model_validate({"ports": [line_port(cable.gateway_path)]})
    adapters = start_serial(settings, REGISTRY, results)
    try:
        with serial.Serial(cable.devices_path, timeout=1) as device:
            wait_until(connected(adapters, cable.gateway_path), "the port to open")
            device.write(sentence("bin", "BIN-1", {"fill_pct": 10.0}))
            wait_until(lambda: len(results.readings()) == 1, "the first reading")
            cable.unplug()
            wait_until(lambda: not connected(adapters, cable.gateway_path)(), "the loss noticed")
            device.write(sentence("bin", "BIN-1", {"fill_pct": 11.0}))  # into a pulled cable
            time.sleep(0.3)
            cable.replug()
            wait_until(connected(adapters, cable.gateway_path), "the port reopened")
            device.write(sentence("bin", "BIN-1", {"fill_pct": 12.0}))
            wait_until(lambda: len(results.readings()) == 2, "a reading after the replug")
        stats = adapters.stats()[cable.gateway_path]
    finally:
        adapters.stop()
    assert [r.values["fill_pct"] for r in results.readings()] == [10.0, 12.0]
    assert stats["reconnects"] == 1
    assert results.rejections() == []


def test_unplugged_modbus_port_is_reopened_without_blaming_the_slaves(cable):
    slaves = [slave(1, "WL-1", LEVEL_AT_0)]
    bus = start_slaves(cable.devices_path, slaves, {"WL-1": Samples(1000, [{"level_cm": 5.0}])})
    results = Results()
    polled = [{**slaves[0], "poll_s": 0.1, "timeout_s": 0.2}]
    settings = SerialSettings.model_validate({"ports": [modbus_port(cable.gateway_path, polled)]})
    adapters = start_serial(settings, REGISTRY, results)
    try:
        wait_until(lambda: len(results.readings()) >= 3, "readings before the unplug")
        cable.unplug()
        wait_until(lambda: not connected(adapters, cable.gateway_path)(), "the loss noticed")
        time.sleep(0.5)
        before = len(results.readings())
        cable.replug()
        wait_until(lambda: len(results.readings()) >= before + 3, "readings after the replug")
        stats = adapters.stats()[cable.gateway_path]
    finally:
        adapters.stop()
        bus.stop()
    assert stats["reconnects"] == 1
    assert stats["slaves"]["WL-1"]["failures"] == 0
    assert not stats["slaves"]["WL-1"]["down"]


def test_builtin_serial_scenario_through_the_gateway_side(tmp_path):
    scenario = load_serial_scenario(BUILTIN_SERIAL_SCENARIO)
    simulation = SerialSimulation(scenario, tmp_path / "serial", time_scale=90)
    registry = load_registry(BUILTIN_SERIAL_SCENARIO.parent / "serial_builtin" / "devices.csv")
    results = Results()
    settings = SerialSettings.model_validate(simulation.gateway_config())
    adapters = start_serial(settings, registry, results)
    try:
        # A sentence sent before the gateway's side is open would be flushed by the open.
        for path in simulation.gateway_paths.values():
            wait_until(connected(adapters, path), f"{path} open")
        simulation.start()
        wait_until(simulation.finished, "the timeline to play out", timeout_s=60)
        truth = simulation.truth()
        gauges_path = simulation.gateway_paths["gauges"]

        def all_in() -> bool:
            """Every sentence sent is read and the dead gauge's recovery is seen."""
            stats = adapters.stats()
            lines = [p for p in stats.values() if p["framing"] == "line"]
            handled = sum(p["readings"] + sum(p["rejections"].values()) for p in lines)
            expected = truth["sentences_sent"] + sum(truth["expected_rejections"].values())
            return handled >= expected and not stats[gauges_path]["slaves"]["WL-103"]["down"]

        wait_until(all_in, "the last sentences and polls")
        stats = adapters.stats()
    finally:
        adapters.stop()
        simulation.close()
    counted: dict[str, int] = {}
    for rejection in results.rejections():
        counted[rejection.reason] = counted.get(rejection.reason, 0) + 1
    assert counted == {k: v for k, v in truth["expected_rejections"].items() if v}
    line_readings = [r for r in results.readings() if r.device_id in ("MH-101", "BIN-101")]
    assert len(line_readings) == truth["sentences_sent"] > 0
    levels = [r.values["level_cm"] for r in results.readings("WL-101")]
    assert levels[0] < 30 and max(levels) >= 50  # past warning, then past alarm
    # The receive clock runs at the time scale: one gauge sample per 10 event seconds.
    stamps = [r.ts for r in results.readings("WL-101")]
    step = statistics.median(b - a for a, b in itertools.pairwise(stamps))
    assert step == pytest.approx(10_000, rel=0.2)
    gauges = stats[simulation.gateway_paths["gauges"]]["slaves"]
    assert gauges["WL-103"]["times_down"] == 1 and not gauges["WL-103"]["down"]
    assert not any(s["rejections"] for s in gauges.values())
