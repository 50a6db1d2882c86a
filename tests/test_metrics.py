"""``/metrics`` is valid Prometheus exposition, read back with prometheus-client's parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import GatewayMetrics

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
    },
    "evidence_refused": {"too_large": 2},
    "evidence_uploads": {"uploaded": 5, "linked_too_large": 1},
    "platform_events": {"accepted": 7, "refused": {"bad_signature": 2}, "handler_errors": 0},
    "health": {
        "MH-001": {"offline": True, "battery_low": False, "suspect": False},
        "BIN-001": {"offline": True, "battery_low": True, "suspect": False},
    },
    "parts": {"delivery": {"restarts": 1, "last_error": "boom"}, "consume": {"restarts": 0}},
    "serial": {'COM"1\\': {"path": 'COM"1\\', "connected": True, "reconnects": 3}},
    "influxdb": {"exported": 90, "pending": 10},
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


def test_figures_and_histograms_parse_back_exactly():
    metrics = GatewayMetrics(lambda: STATS)
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
