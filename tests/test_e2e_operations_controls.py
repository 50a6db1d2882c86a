"""End to end: the operations team's controls on a running gateway, through its API.

Real mosquitto, the bundled platform and ``citygw run``; devices publish over MQTT. A
silence made through the API keeps a full bin from filing its case while an unsilenced
one files at once, and removing the silence files the held case then. A threshold lowered
through the API files a case on the next reading, with no restart, and the version history
says who changed what and why. A backtest through the API then says what a higher level
would have filed over the same readings.
"""

from __future__ import annotations

import json
import sqlite3
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from harness import Stack, wait_until


def _publish(stack: Stack, readings: list[tuple[str, int, float]]) -> None:
    """(device, ts, fill_pct) as the bins send them, QoS 1, in order."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bins")
    client.connect("127.0.0.1", stack.broker.port)
    client.loop_start()
    try:
        for device, ts, fill in readings:
            body = {"ts": ts, "values": {"fill_pct": fill}}
            topic = f"citygw/v1/{device}/telemetry"
            client.publish(topic, json.dumps(body), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def _stored_alerts(stack: Stack) -> list[tuple[str, str, str | None]]:
    """(alert key, state, held_by) in the order the gateway stored them."""
    with sqlite3.connect(f"file:{stack.workdir / 'gateway.db'}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT alert_key, state, held_by FROM alerts ORDER BY id")
        return [tuple(row) for row in rows]


def _cases_of(stack: Stack) -> dict[str, dict]:
    """Cases on the platform by the device whose alert opened them."""
    return {case["evidence"][0]["source_id"]: case for case in stack.cases()}


def test_a_silence_holds_a_case_until_removed_and_a_threshold_change_applies_live(tmp_path):
    stack = Stack(tmp_path, config={"rules": {"bin": {"fire_for_s": 60}}})
    stack.start()
    try:
        api = stack.gateway_http
        made = api.post(
            "/api/v1/silences",
            json={"matchers": {"device": "BIN-001"}, "author": "王工",
                  "reason": "收集点改造施工", "duration_s": 3600},
        )  # fmt: skip
        assert made.status_code == 201, made.text
        silence_id, starts = made.json()["id"], made.json()["starts_ms"]

        # Both bins full for longer than fire_for_s (60 s), by their clocks, from after the
        # silence began (silences match on event time): only the unsilenced one files.
        full = [(device, starts + offset_ms, 96.0)
                for offset_ms in (1000, 62_000) for device in ("BIN-001", "BIN-020")]  # fmt: skip
        _publish(stack, full)
        wait_until(lambda: "BIN-020" in _cases_of(stack), "BIN-020's case", 60, stack.gateway)
        wait_until(lambda: len(_stored_alerts(stack)) == 2, "both alerts stored", 30)
        assert sorted(_stored_alerts(stack)) == [
            ("BIN-001/bin_overflow", "firing", f"silence:{silence_id}"),
            ("BIN-020/bin_overflow", "firing", None),
        ]
        assert set(_cases_of(stack)) == {"BIN-020"}
        held = stack.gateway_stats()["held"]
        assert (held["silence"], held["silences_in_force"]) == (1, 1)

        # The bin is still full when the silence is lifted: its case is filed then.
        removed = api.delete(
            f"/api/v1/silences/{silence_id}", params={"author": "王工", "reason": "施工结束"}
        )
        assert removed.status_code == 200, removed.text
        wait_until(lambda: "BIN-001" in _cases_of(stack), "BIN-001's case", 30, stack.gateway)
        assert len(stack.cases()) == 2
        held = stack.gateway_stats()["held"]
        assert (held["silence"], held["silences_in_force"]) == (0, 0)

        # A threshold lowered through the API: the next reading of BIN-010 files a case.
        pid = stack.gateway.proc.pid
        now = int(time.time() * 1000)
        _publish(stack, [("BIN-010", now - 30_000, 72.0)])
        wait_until(lambda: stack.gateway_stats()["readings_stored"] == 5, "the reading", 30)
        assert "BIN-010" not in _cases_of(stack)  # 72 % is below the 90 % in force
        changed = api.put(
            "/api/v1/thresholds",
            json={"changes": {"devices.BIN-010.fill_fire_pct": 70,
                              "devices.BIN-010.fire_for_s": 0},
                  "author": "李工", "reason": "夏季高温，易腐垃圾须早清运"},
        )  # fmt: skip
        assert changed.status_code == 200, changed.text
        _publish(stack, [("BIN-010", now, 72.0)])
        wait_until(lambda: "BIN-010" in _cases_of(stack), "BIN-010's case", 30, stack.gateway)
        assert stack.gateway.proc.pid == pid and stack.gateway.running()
        assert len(stack.cases()) == 3

        history = api.get("/api/v1/thresholds/history").json()
        newest = history["versions"][0]
        assert (newest["version"], newest["author"], newest["reason"]) == (
            2,
            "李工",
            "夏季高温，易腐垃圾须早清运",
        )
        assert sorted((d["path"], d["old"], d["new"]) for d in newest["diff"]) == [
            ("devices.BIN-010.fill_fire_pct", None, 70.0),
            ("devices.BIN-010.fire_for_s", None, 0.0),
        ]

        # What would a kind-wide 97 % have filed over these readings? The bins at 96 %
        # none; BIN-010, on its own 70 %, still its case.
        asked = api.post(
            "/api/v1/backtests",
            json={"since_ms": starts - 600_000, "until_ms": starts + 600_000,
                  "changes": {"bin.fill_fire_pct": 97}},
        )  # fmt: skip
        assert asked.status_code == 202, asked.text
        job = f"/api/v1/backtests/{asked.json()['id']}"
        wait_until(lambda: api.get(job).json()["status"] == "done", "the backtest", 60)
        report = api.get(job).json()["report"]
        assert (report["current"]["cases"], report["proposed"]["cases"]) == (3, 1)
        assert report["added"] == []
        assert sorted(case["alert_key"] for case in report["removed"]) == [
            "BIN-001/bin_overflow",
            "BIN-020/bin_overflow",
        ]
    finally:
        stack.stop()
