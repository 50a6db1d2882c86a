"""End to end over serial: Modbus RTU gauges and line-protocol sensors on pty null modems,
through the gateway process, to exactly the ground truth's cases.

The builtin serial scenario: three water gauges (units 1–3, three register layouts) on one
RS-485 bus served by a real pymodbus RTU server, a cover and a bin speaking the ASCII line
protocol on another, with noise, a bad checksum and a cut sentence on the line bus and
gauge 3 dead for four event-minutes. The gateway reads the near ends of the null modems
exactly as it would read /dev/serial/by-id links. The two tests' buses and stacks run
side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_side_by_side import side_by_side, this_test

from simulators.serial.runner import SerialSimulation
from simulators.serial.scenario import BUILTIN_SERIAL_SCENARIO, load_serial_scenario
from simulators.truth import compare_cases

from harness import Stack, wait_until


class SerialRun:
    """The builtin serial scenario's buses in ``workdir`` and a stack reading them;
    ``run`` starts the stack (ready once its serial ports are open: the timeline starts
    after that) and returns ``script(simulation, stack)``."""

    def __init__(self, workdir: Path, script: Callable[[SerialSimulation, Stack], Any]) -> None:
        scenario = load_serial_scenario(BUILTIN_SERIAL_SCENARIO)
        self.simulation = SerialSimulation(scenario, workdir / "buses")
        self.stack = Stack(
            workdir,
            scenario=scenario.timeline.path,
            config={"serial": self.simulation.gateway_config()},
        )
        self._script = script

    def run(self) -> Any:
        self.stack.start()
        return self._script(self.simulation, self.stack)

    def stop(self) -> None:
        self.stack.stop()
        self.simulation.close()


def run_to_the_end(simulation: SerialSimulation, stack: Stack) -> dict:
    """Play the timeline, then wait until every case the truth expects is delivered."""
    wait_until(simulation.finished, "the serial timeline", 60)
    expected = len(simulation.truth()["expected_cases"])

    def delivered() -> bool:
        stats = stack.gateway_stats()
        return stats["outbox"]["pending"] == 0 and len(stack.cases()) >= expected

    wait_until(delivered, "the cases delivered", 60)
    return stack.gateway_stats()


def ports_by_framing(stats: dict) -> dict[str, dict]:
    return {port["framing"]: port for port in stats["serial"].values()}


def played(simulation: SerialSimulation, stack: Stack) -> dict:
    """The timeline played to its end; the gateway's stats once every case is delivered."""
    simulation.start()
    return run_to_the_end(simulation, stack)


def unplugged_mid_flood(simulation: SerialSimulation, stack: Stack) -> dict:
    """The gauge bus's adapter pulled while the water rises and plugged back once the
    gateway noticed; then ``played``'s stats."""
    simulation.start()
    gauges = simulation.modems["gauges"]
    wait_until(lambda: simulation.clock.offset_ms() > 200_000, "the water rising", 20)
    gauges.unplug()
    wait_until(
        lambda: not ports_by_framing(stack.gateway_stats())["modbus"]["connected"],
        "the gateway to notice the adapter is gone",
        30,
    )
    gauges.replug()
    return run_to_the_end(simulation, stack)


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Both tests' buses and stacks side by side (tests/e2e_side_by_side.py): each mostly
    waits for its timeline's real seconds."""
    yield from side_by_side(
        request,
        [
            (test_serial_devices_file_exactly_the_ground_truth, played),
            (test_gauge_bus_unplugged_and_replugged_mid_flood, unplugged_mid_flood),
        ],
        lambda script: SerialRun(tmp_path_factory.mktemp("run"), script),
    )


@pytest.fixture
def run(request, runs) -> tuple[SerialSimulation, Stack, dict]:
    """This test's simulation, its stack, and the stats its script returned."""
    running = this_test(request, runs)
    return running.part.simulation, running.part.stack, running.outcome()


def test_serial_devices_file_exactly_the_ground_truth(run):
    simulation, stack, stats = run
    truth = simulation.truth()
    report = compare_cases(truth, stack.cases())
    assert report.ok, report.render() + "\n--- gateway log ---\n" + stack.gateway.tail()
    serial_reasons = {k: v for k, v in truth["expected_rejections"].items() if v}
    assert stats["rejected"] == serial_reasons  # garbage 2, bad_checksum 1: counted, skipped
    letters = stack.gateway_http.get("/api/v1/dead-letters", params={"reason": "bad_checksum"})
    (letter,) = letters.json()["dead_letters"]
    line_port = simulation.gateway_paths["street"]
    assert letter["topic"] == f"serial:{line_port}"  # where, and the sentence as received
    assert letter["device_id"] == "BIN-101" and letter["payload"].startswith("$BN,BIN-101,")
    ports = ports_by_framing(stats)
    line = ports["line"]
    assert line["readings"] == truth["sentences_sent"]  # every good sentence, nothing lost
    gauges = ports["modbus"]["slaves"]
    assert gauges["WL-103"]["times_down"] == 1 and not gauges["WL-103"]["down"]
    # gauge 3's silence is its own: the live gauges on the same bus were read on their
    # period throughout (one read per 10 event-seconds of the timeline); a poller that
    # waited out the dead gauge's timeout every cycle would fall ~15 % short here
    on_time = truth["duration_s"] / 10
    assert min(gauges["WL-101"]["ok"], gauges["WL-102"]["ok"]) >= 0.95 * on_time, gauges
    assert gauges["WL-103"]["ok"] < 0.8 * on_time, gauges  # it really was dead a while


def test_gauge_bus_unplugged_and_replugged_mid_flood(run):
    simulation, stack, stats = run
    report = compare_cases(simulation.truth(), stack.cases())
    assert report.ok, report.render() + "\n--- gateway log ---\n" + stack.gateway.tail()
    port = ports_by_framing(stats)["modbus"]
    assert port["connected"] and port["reconnects"] >= 1, port
