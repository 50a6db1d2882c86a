"""``/metrics`` is valid Prometheus exposition, read back with prometheus-client's parser;
the figures new parts keep for it (platform latency over real HTTP, the outbox's oldest
pending command in a real store) come out exactly."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families
from scripted_platform import TOKEN, Reply

from case_bridge import outbox
from case_bridge.guarded_platform import DeliverySettings, GuardedPlatform
from case_bridge.platform import BundledPlatform, PlatformError
from domain import Alert, AlertState, CaseCommand, CommandKind, Location, Priority
from gateway import store
from gateway.metrics import GatewayMetrics

NOW_S = 1_767_225_600.0

STATS = {
    "mqtt": {"connected": True, "received": 120, "connect_failures": 2},
    "readings_stored": 100,
    "alerts": 7,
    "suspect_readings": 3,
    "rejected": {"bad_schema": 4, "internal": 1},
    "outbox": {"pending": 1, "delivered": 5, "parked": 0},
    "delivery": {
        "delivered_open": 4,
        "retries": 2,
        "last_error": "HTTP 503",
        "breaker_state": "half_open",
        "calls": {
            "open_case": {
                "buckets": [0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 1],
                "sum_s": 61.35,
                "failures": {"transient": 1},
            }
        },
    },
    "consume": {
        "accepted": 97,
        "suspect": 3,
        "rejected_bad_schema": 4,
        "commands": 6,
        "incidents_opened": 4,
    },
    "incidents_open": 5,
    "outbox_oldest_pending_ms": int(NOW_S * 1000) - 90_000,
    "video": {
        "cameras": {
            "CAM-1": {
                "status": "online",
                "frames": 50,
                "reconnects": 1,
                "frames_analysed": 40,
                "inferences": 10,
                "inference_ms": 125.0,
                "lag_ms": 450,
            },
            "CAM-2": {
                "status": "reconnecting",
                "frames": 0,
                "reconnects": 3,
                "frames_analysed": 0,
                "inferences": 0,
                "inference_ms": 0,
            },
        },
        "frames_dropped": 10,
        "analysis_errors": 0,
    },
    "evidence_refused": {"too_large": 2},
    "api_access": {"sign_ins": {"ok": 3, "wrong_credentials": 1}, "refused": {"forbidden": 2}},
    "evidence_uploads": {"uploaded": 5, "linked_too_large": 1},
    "platform_events": {"accepted": 7, "refused": {"bad_signature": 2}, "handler_errors": 0},
    "health": {
        "MH-001": {"offline": True, "battery_low": False, "suspect": False},
        "BIN-001": {"offline": True, "battery_low": True, "suspect": False},
    },
    "parts": {"delivery": {"restarts": 1, "last_error": "boom"}, "consume": {"restarts": 0}},
    "serial": {'COM"1\\': {"path": 'COM"1\\', "connected": True, "reconnects": 3}},
    "influxdb": {
        "exported": 90,
        "pending": 10,
        "oldest_pending_ms": int(NOW_S * 1000) - 12_500,
        "failures": {"connection": 2},
        "lost_to_retention": 0,
    },
    "held": {
        "silence": 2,
        "confirm": 1,
        "inhibited": 0,
        "silences_in_force": 3,
        "next_due_ms": 1_767_225_600_000,
    },
}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def render(stats: dict) -> dict[tuple[str, tuple], float]:
    return samples(GatewayMetrics(lambda: stats, clock=lambda: NOW_S).render().decode())


def test_figures_and_histograms_parse_back_exactly():
    metrics = GatewayMetrics(lambda: STATS, clock=lambda: NOW_S)
    metrics.batch_seconds.observe(0.003)
    metrics.case_filed_seconds.observe(42)
    text = metrics.render().decode()
    got = samples(text)
    assert got[("citygw_mqtt_connected", ())] == 1
    assert got[("citygw_mqtt_received_total", ())] == 120
    assert got[("citygw_readings_stored_total", ())] == 100
    assert got[("citygw_suspect_readings_total", ())] == 3
    assert got[("citygw_rejected_total", (("reason", "internal"),))] == 1
    assert got[("citygw_outbox", (("state", "pending"),))] == 1
    assert got[("citygw_delivery_total", (("result", "retries"),))] == 2
    assert ("citygw_delivery_total", (("result", "last_error"),)) not in got
    assert ("citygw_delivery_total", (("result", "breaker_state"),)) not in got
    assert got[("citygw_platform_breaker_state", (("state", "half_open"),))] == 1
    assert got[("citygw_platform_breaker_state", (("state", "open"),))] == 0
    assert got[("citygw_evidence_refused_total", (("reason", "too_large"),))] == 2
    assert got[("citygw_sign_ins_total", (("outcome", "wrong_credentials"),))] == 1
    assert got[("citygw_api_refused_total", (("reason", "forbidden"),))] == 2
    assert got[("citygw_evidence_uploads_total", (("outcome", "uploaded"),))] == 5
    assert got[("citygw_platform_events_total", (("result", "accepted"),))] == 7
    assert got[("citygw_platform_events_total", (("result", "bad_signature"),))] == 2
    assert got[("citygw_evidence_uploads_total", (("outcome", "linked_too_large"),))] == 1
    assert got[("citygw_devices_unhealthy", (("problem", "offline"),))] == 2
    assert got[("citygw_devices_unhealthy", (("problem", "battery_low"),))] == 1
    assert got[("citygw_part_restarts_total", (("part", "delivery"),))] == 1
    assert got[("citygw_serial_reconnects_total", (("port", 'COM"1\\'),))] == 3
    assert got[("citygw_influxdb_pending", ())] == 10
    assert got[("citygw_alerts_held", (("holder", "silence"),))] == 2
    assert got[("citygw_alerts_held", (("holder", "confirm"),))] == 1
    assert got[("citygw_silences_in_force", ())] == 3
    assert not [name for name, _ in got if "next_due" in name]
    assert got[("citygw_batch_seconds_bucket", (("le", "0.005"),))] == 1
    assert got[("citygw_batch_seconds_bucket", (("le", "0.0025"),))] == 0
    assert got[("citygw_case_filed_seconds_count", ())] == 1
    assert "# HELP citygw_rejected_total Messages refused, by reason" in text
    assert "# TYPE citygw_batch_seconds histogram" in text


def test_the_issues_figures_readings_incidents_cases_outbox_age_cameras_and_export_lag():
    got = render(STATS)
    assert got[("citygw_readings_accepted_total", ())] == 97
    assert got[("citygw_incidents_open", ())] == 5
    assert got[("citygw_incidents_opened_total", ())] == 4
    assert got[("citygw_cases_filed_total", ())] == 4
    assert got[("citygw_outbox_oldest_pending_age_seconds", ())] == 90
    assert got[("citygw_mqtt_subscribed", ())] == 0  # not in these stats: not subscribed
    cam1, cam2 = (("camera", "CAM-1"),), (("camera", "CAM-2"),)
    assert got[("citygw_camera_online", cam1)] == 1
    assert got[("citygw_camera_online", cam2)] == 0
    assert got[("citygw_camera_frames_read_total", cam1)] == 50
    assert got[("citygw_camera_frames_analysed_total", cam1)] == 40
    assert got[("citygw_camera_inferences_total", cam1)] == 10
    assert got[("citygw_camera_inference_seconds_total", cam1)] == 0.125
    assert got[("citygw_camera_reconnects_total", cam2)] == 3
    assert got[("citygw_camera_lag_seconds", cam1)] == 0.45
    assert ("citygw_camera_lag_seconds", cam2) not in got  # no frame analysed: no lag
    assert got[("citygw_video_frames_dropped_total", ())] == 10
    assert got[("citygw_influxdb_export_lag_seconds", ())] == 12.5
    assert got[("citygw_influxdb_failures_total", (("reason", "connection"),))] == 2


def test_platform_latency_is_a_histogram_per_call_with_failures_by_kind():
    got = render(STATS)
    call = ("call", "open_case")
    assert got[("citygw_platform_call_seconds_bucket", (call, ("le", "0.05")))] == 0
    assert got[("citygw_platform_call_seconds_bucket", (call, ("le", "0.1")))] == 1
    assert got[("citygw_platform_call_seconds_bucket", (call, ("le", "0.25")))] == 3
    assert got[("citygw_platform_call_seconds_bucket", (call, ("le", "60.0")))] == 3
    assert got[("citygw_platform_call_seconds_bucket", (call, ("le", "+Inf")))] == 4
    assert got[("citygw_platform_call_seconds_count", (call,))] == 4
    assert got[("citygw_platform_call_seconds_sum", (call,))] == 61.35
    assert got[("citygw_platform_call_failures_total", (call, ("failure", "transient")))] == 1
    # The calls' figures are not counters of the delivery outcomes.
    assert not [labels for name, labels in got if name == "citygw_delivery_total"
                and dict(labels)["result"] == "calls"]  # fmt: skip


def test_nothing_pending_is_an_age_of_zero_and_a_clock_behind_never_negative():
    stats = {
        **STATS,
        "outbox_oldest_pending_ms": None,
        "influxdb": {**STATS["influxdb"], "oldest_pending_ms": int(NOW_S * 1000) + 5000},
    }
    got = render(stats)
    assert got[("citygw_outbox_oldest_pending_age_seconds", ())] == 0
    assert got[("citygw_influxdb_export_lag_seconds", ())] == 0


def test_platform_calls_over_real_http_are_timed_and_their_failures_counted(fake):
    """The guarded platform in front of the real adapter, against a platform on loopback
    that answers 503, then 422, then files the case; status sync's listing is timed too."""
    fake.script(Reply(503, {"detail": "busy"}), Reply(422, {"detail": "bad class code"}))
    guarded = GuardedPlatform(BundledPlatform(fake.url, TOKEN, timeout_s=5), DeliverySettings())

    async def calls() -> None:
        for _ in range(2):
            with pytest.raises(PlatformError):
                await guarded.open_case({"class_code": "01"}, "INC-1/1")
        await guarded.open_case({"class_code": "01"}, "INC-1/1")
        await guarded.changed_cases(None, None)
        await guarded.aclose()

    asyncio.run(calls())
    got = render({**STATS, "delivery": guarded.stats()})
    opened, listed = ("call", "open_case"), ("call", "changed_cases")
    assert got[("citygw_platform_call_seconds_count", (opened,))] == 3
    assert got[("citygw_platform_call_seconds_count", (listed,))] == 1
    assert got[("citygw_platform_call_failures_total", (opened, ("failure", "transient")))] == 1
    assert got[("citygw_platform_call_failures_total", (opened, ("failure", "refused")))] == 1
    assert ("citygw_platform_call_failures_total", (listed, ("failure", "transient"))) not in got
    # Loopback answers well within the first buckets; the sum is the time actually taken.
    assert got[("citygw_platform_call_seconds_bucket", (opened, ("le", "1.0")))] == 3
    assert 0 < got[("citygw_platform_call_seconds_sum", (opened,))] < 3


def test_the_oldest_pending_command_comes_from_the_store(tmp_path):
    """Delivered rows do not count; a store with nothing pending has no oldest."""
    conn = store.connect(tmp_path / "gateway.db")
    assert outbox.oldest_pending_ms(conn) is None
    alert = Alert(
        key="BIN-001/bin_full", source_id="BIN-001", rule_id="bin_full",
        state=AlertState.FIRING, class_code="99101", priority=Priority.NORMAL,
        location=Location(26.09, 119.30), ts=1_000,
    )  # fmt: skip
    for n, created_ms in enumerate((5_000, 7_000, 9_000), start=1):
        command = CaseCommand(f"INC-{n}/1", f"INC-{n}", CommandKind.OPEN, alert, alert.priority)
        with conn:
            outbox.enqueue(conn, command, created_ms)
    [first, *_] = outbox.pending(conn)
    outbox.mark_delivered(conn, first.seq, 8_000)
    assert outbox.oldest_pending_ms(conn) == 7_000
    conn.close()


def test_parts_not_running_or_not_configured_are_left_out_not_zeroed():
    """Before ``run`` (no parts yet) and without serial ports or InfluxDB."""
    absent = ("serial", "influxdb", "mqtt", "delivery", "health", "held")
    stats = {k: v for k, v in STATS.items() if k not in absent}
    got = samples(GatewayMetrics(lambda: stats).render().decode())
    names = {name for name, _ in got}
    assert not [n for n in names if n.startswith(("citygw_influxdb", "citygw_serial"))]
    assert not [n for n in names if n.startswith(("citygw_mqtt", "citygw_delivery"))]
    assert not [n for n in names if n.startswith(("citygw_alerts_held", "citygw_silences"))]
    assert got[("citygw_readings_stored_total", ())] == 100
