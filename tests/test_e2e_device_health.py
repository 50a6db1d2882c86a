"""End to end: device health through mosquitto, the gateway and the platform.

The ``health`` scenario stages sensors failing rather than streets: a cover whose modem
dies for a while, a bin whose battery runs down, a water gauge reading 8 m that is not
there, and a real modest flood beside it. The cases filed must be exactly its truth: three
maintenance cases (each one device's, never merged) and the real flood — and no
water-logging case from the lying gauge, whose business alarms are muted while suspect.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from e2e_side_by_side import side_by_side, this_test
from e2e_stack_runs import StackRun
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from simulators.truth import compare_cases

from harness import Stack, wait_until

HEALTH = Path(__file__).resolve().parents[1] / "simulators" / "scenarios" / "health"
# Each staged failure lasts minutes of the scenario's compressed time, well past any
# confirmation it could be given: filed at once here (confirmation has its own tests).
FAST_HEALTH = {"rules": {"health": {"check_every_s": 0.5, "confirm_s": 0}}}


def failing_sensors(run: StackRun) -> dict:
    """The health scenario at its own time scale; the gateway's stats once caught up."""
    sim = run.simulator()
    assert sim.proc.wait(90) == 0, sim.tail()
    return run.stack.wait_caught_up(30)


def last_will(run: StackRun) -> float:
    """A cover that reports once and whose link then dies without a DISCONNECT; the
    seconds from the dead link to the offline case on the platform."""
    s = run.stack
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="MH-001")
    device.will_set("citygw/v1/MH-001/status", "offline", qos=1, retain=True)
    device.connect("127.0.0.1", s.broker.port)
    device.loop_start()
    device.publish("citygw/v1/MH-001/status", "online", qos=1, retain=True).wait_for_publish(5)
    reading = {"ts": int(time.time() * 1000), "values": {"tilt_deg": 0.5, "lid_open": False}}
    device.publish("citygw/v1/MH-001/telemetry", json.dumps(reading), qos=1).wait_for_publish(5)
    wait_until(lambda: s.gateway_stats()["readings_stored"] == 1, "the reading stored", 30)
    device.loop_stop()
    device.socket().close()  # a dead link, no DISCONNECT: the broker sends the will
    dropped = time.monotonic()
    wait_until(lambda: len(s.cases()) == 1, "the offline case", 30)
    return time.monotonic() - dropped


# The last will's health settings: offline with no reading within lwt_grace_s after the
# will, filed when still offline confirm_s later.
LWT_HEALTH = {"rules": {"health": {"check_every_s": 0.5, "lwt_grace_s": 2, "confirm_s": 3}}}


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Both tests' stacks side by side (tests/e2e_side_by_side.py): each mostly waits for
    its scenario's or its grace's real seconds."""
    yield from side_by_side(
        request,
        [
            (
                test_failing_sensors_file_maintenance_cases_and_a_lying_gauge_no_flood,
                (failing_sensors, {"scenario": HEALTH / "scenario.yaml", "config": FAST_HEALTH}),
            ),
            (
                test_a_last_will_saying_offline_files_the_offline_case_after_its_grace,
                (last_will, {"config": LWT_HEALTH}),
            ),
        ],
        lambda recipe: StackRun(tmp_path_factory.mktemp("run"), recipe[0], **recipe[1]),
    )


@pytest.fixture
def run(request, runs) -> tuple[Stack, object]:
    """This test's stack and what its script returned."""
    running = this_test(request, runs)
    return running.part.stack, running.outcome()


def test_failing_sensors_file_maintenance_cases_and_a_lying_gauge_no_flood(run):
    s, stats = run
    report = compare_cases(s.truth(), s.cases())
    assert report.ok, report.render() + "\n--- gateway log ---\n" + s.gateway.tail()
    # WL-101's thirty 800 cm readings (300 s to 600 s), then two plausible ones before the
    # third in a row makes it believed again
    assert stats["suspect_readings"] == 30 + 2

    def health_of(device: str) -> dict:
        return s.gateway_stats()["health"][device]

    assert health_of("WL-101")["suspect"] is None  # believed again after it came back
    assert health_of("MH-101")["offline"] is False  # reported again at 750 s
    assert health_of("BIN-101")["battery_low"] is True
    samples = {
        (sample.name, tuple(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(s.gateway_http.get("/metrics").text)
        for sample in family.samples
    }
    assert samples[("citygw_devices_unhealthy", (("problem", "battery_low"),))] == 1
    assert samples[("citygw_devices_unhealthy", (("problem", "suspect"),))] == 0
    assert samples[("citygw_suspect_readings_total", ())] == 32
    offline = next(c for c in s.cases() if c["class_code"] == "01003")
    states = [e["state"] for e in offline["evidence"]]
    assert states == ["firing", "cleared"]

    readings = s.gateway_http.get(
        "/api/v1/devices/WL-101/readings", params={"since": 0, "limit": 1000}
    ).json()["readings"]
    assert len(readings) == 90  # the lie is kept in the history: every reading stored
    lies = [r for r in readings if r["values"]["level_cm"] > 700]
    assert len(lies) == 30 and all(r["suspect"] for r in lies)
    assert sum(r["suspect"] for r in readings) == 30 + 2  # flagged as the rules saw them


def test_a_last_will_saying_offline_files_the_offline_case_after_its_grace(run):
    """A device that drops off without a goodbye: the broker publishes its Last Will on
    ``citygw/v1/<id>/status``; with no reading within ``lwt_grace_s`` it is offline, and
    still offline ``confirm_s`` later, its case is filed."""
    s, filed_after_s = run
    assert filed_after_s >= 2 + 3  # not before the grace and the confirmation
    (case,) = s.cases()
    assert (case["class_code"], case["priority"]) == ("01003", "normal")
    assert "Last Will" in case["evidence"][0]["summary"]
    assert s.gateway_stats()["health"]["MH-001"]["offline"] is True
