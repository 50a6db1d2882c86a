"""End to end: the device simulator's builtin scenario through a real mosquitto, the
gateway process and the bundled platform ends with exactly the ground truth's cases —
also with the platform down for the first minute, the gateway SIGKILLed mid-run, and the
broker restarted mid-run. Each test has its own stack and scenario run; the runs go
side by side (tests/e2e_side_by_side.py), since each mostly waits for the simulator's
clock."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from e2e_side_by_side import side_by_side, this_test
from e2e_stack_runs import StackRun
from paho.mqtt.enums import CallbackAPIVersion

from simulators.truth import case_key, compare_cases

from harness import Stack, wait_until

TIME_SCALE = 120  # the builtin's ~30 event-minutes in ~15 s
# From the platform's start: well past the stack's start-up plus the whole scenario, so
# the scenario's cases wait in the outbox (the stacks of this module start side by side:
# on a loaded machine 30 s was once not enough for even the first case to be tried).
PLATFORM_DOWN_S = 60
# The breaker's cool-down (15 s by default) shortened as the harness shortens retries:
# once the platform is back, the next probe is due within 2 s, not 15.
PLATFORM_DOWN = {"platform_unavailable_s": PLATFORM_DOWN_S, "breaker_cooldown_s": 2}


def assert_exact_cases(s: Stack) -> None:
    report = compare_cases(s.truth(), s.cases())
    assert report.ok, report.render() + "\n--- gateway log ---\n" + s.gateway.tail()


def assert_every_good_reading_stored_once(s: Stack, stats: dict) -> None:
    truth = s.truth()
    good = truth["published"] - sum(truth["expected_rejections"].values())
    assert stats["readings_stored"] == good


def scenario(
    during: Callable[[Stack], None] | None = None, timeout_s: float = 120
) -> Callable[[StackRun], tuple[dict, float]]:
    """A run's script: the builtin scenario at ``TIME_SCALE``, ``during(stack)`` as the
    simulator starts; returns the gateway's stats once it caught up, and the seconds from
    just before the stack started to then."""

    def script(run: StackRun) -> tuple[dict, float]:
        sim = run.simulator(TIME_SCALE)
        if during is not None:
            during(run.stack)
        assert sim.proc.wait(timeout_s) == 0, sim.tail()
        return run.stack.wait_caught_up(timeout_s), time.monotonic() - run.started

    return script


def kill_and_restart_the_gateway(s: Stack) -> None:
    wait_until(lambda: s.gateway_stats()["alerts"] >= 2, "first alerts", 60)
    s.gateway.kill()
    time.sleep(2)  # the simulator keeps publishing into the broker's queue meanwhile
    s.start_gateway()


def restart_the_broker(s: Stack) -> None:
    wait_until(lambda: s.gateway_stats()["alerts"] >= 2, "first alerts", 60)
    s.broker.stop()
    time.sleep(2)  # the outage: the simulator keeps publishing into paho's queue
    s.broker.start()


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Each test's scenario run, all side by side; each test's is the one named after it."""
    yield from side_by_side(
        request,
        [
            (test_builtin_scenario_files_exactly_the_ground_truth, (scenario(), {})),
            (
                test_platform_down_for_the_first_minute,
                (scenario(timeout_s=150), PLATFORM_DOWN),
            ),
            (
                test_gateway_sigkilled_mid_run_and_restarted,
                (scenario(kill_and_restart_the_gateway), {}),
            ),
            (test_broker_restarted_mid_run, (scenario(restart_the_broker), {})),
            (
                test_open_case_gathers_repeats_and_a_case_closed_while_the_lid_is_open_is_flagged,
                (scenario(), {}),
            ),
            (
                test_builtin_scenario_through_open311_files_each_expected_case_once,
                (scenario(), {"adapter": "open311"}),
            ),
        ],
        lambda recipe: StackRun(tmp_path_factory.mktemp("run"), recipe[0], **recipe[1]),
    )


@pytest.fixture
def run(request, runs) -> tuple[Stack, dict, float]:
    """This test's stack, its stats once caught up, and the seconds the run took."""
    running = this_test(request, runs)
    stats, elapsed_s = running.outcome()
    return running.part.stack, stats, elapsed_s


def test_builtin_scenario_files_exactly_the_ground_truth(run):
    s, stats, _ = run
    assert_exact_cases(s)
    assert stats["rejected"] == s.truth()["expected_rejections"]
    assert_every_good_reading_stored_once(s, stats)
    cases = s.cases()
    assert all(case["source"] == "iot" and case["status"] == "accepted" for case in cases)
    water = next(case for case in cases if case["class_code"] == "99101")
    assert [h["action"] for h in water["history"]].count("escalate") == 1


def test_platform_down_for_the_first_minute(run):
    s, stats, elapsed_s = run
    # the outbox drained only after the platform rose: its outage began after this run's
    # clock did, and the gateway started after it
    assert elapsed_s >= PLATFORM_DOWN_S
    assert stats["delivery"]["retries"] > 0
    assert_exact_cases(s)
    assert_every_good_reading_stored_once(s, stats)


def test_gateway_sigkilled_mid_run_and_restarted(run):
    s, stats, _ = run
    assert_exact_cases(s)
    assert_every_good_reading_stored_once(s, stats)


def test_broker_restarted_mid_run(run):
    s, stats, _ = run
    assert_exact_cases(s)
    assert_every_good_reading_stored_once(s, stats)


def publish(s: Stack, device_id: str, seq: int, values: dict) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", s.broker.port)
    client.loop_start()
    doc = {"ts": int(time.time() * 1000), "seq": seq, "values": values}
    client.publish(f"citygw/v1/{device_id}/telemetry", json.dumps(doc), qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def cases_of(s: Stack, device_id: str) -> list[dict]:
    return [c for c in s.cases() if any(e["source_id"] == device_id for e in c["evidence"])]


def test_open_case_gathers_repeats_and_a_case_closed_while_the_lid_is_open_is_flagged(run):
    """A closed case whose problem has cleared re-arms its devices: that is
    tests/test_e2e_closure_check.py; here the lid is still open when the city closes it."""
    s, _, _ = run
    [case] = cases_of(s, "MH-001")
    evidence_before = len(case["evidence"])

    # The lid opens again while the case is still open: evidence, not a second case.
    publish(s, "MH-001", 10_001, {"tilt_deg": 30.0, "lid_open": True})
    wait_until(lambda: len(cases_of(s, "MH-001")[0]["evidence"]) > evidence_before, "evidence", 30)
    assert len(cases_of(s, "MH-001")) == 1

    # The city closes the case while the lid is still open: the closure check flags the
    # incident instead of re-arming the cover, so the same open lid files no second case.
    for status in ("registered", "dispatched", "handling", "verifying", "closed"):
        s.platform_http.post(f"/api/v1/cases/{case['id']}/transition", json={"to": status})
    closed = "/api/v1/incidents?status=closed"
    wait_until(lambda: s.gateway_http.get(closed).json()["count"] == 1, "incident closed", 30)
    [incident] = s.gateway_http.get(closed).json()["incidents"]
    assert (incident["case_id"], incident["flag"]) == (case["id"], "closed")
    stored = s.gateway_stats()["readings_stored"]
    publish(s, "MH-001", 10_002, {"tilt_deg": 31.0, "lid_open": True})

    def settled() -> bool:
        stats = s.gateway_stats()
        return stats["readings_stored"] == stored + 1 and stats["outbox"]["pending"] == 0

    wait_until(settled, "the reading stored and the outbox drained", 30)
    assert len(cases_of(s, "MH-001")) == 1
    assert len(s.cases()) == len(s.truth()["expected_cases"])


def test_builtin_scenario_through_open311_files_each_expected_case_once(run):
    """The same fleet, filed through the Open311 adapter into the platform's GeoReport v2
    face: service discovery at start, form-encoded requests, status read back by id.
    GeoReport v2 has no way to add to a filed request, so each case is as first filed: the
    bin that filled first, the water level's first stage (the later ones are counted as
    not sent, not filed as new cases)."""
    s, stats, _ = run
    assert_every_good_reading_stored_once(s, stats)
    expected = sorted(
        (c["class_code"], tuple(sorted(c["devices"]))) for c in s.truth()["expected_cases"]
    )
    filed = sorted((key.class_code, key.devices) for key in map(case_key, s.cases()))
    assert [code for code, _ in filed] == [code for code, _ in expected]
    for (_, devices), (_, truth_devices) in zip(filed, expected, strict=True):
        assert len(devices) == 1 and devices[0] in truth_devices
