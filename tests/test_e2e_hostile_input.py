"""End to end: hostile and careless messages through a real mosquitto to a real gateway.

Each of these once stopped the process, or grew it without bound; as QoS 1 messages they
were redelivered on every restart, so nothing behind them was ever stored. Now each is a
dead letter with its reason, the readings behind them are stored, and a restarted gateway
goes on where it was.
"""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from harness import Stack, wait_until

TOPIC = "citygw/v1/BIN-001/telemetry"


def _reading(ts: int, seq: int, fill: float = 40.0) -> dict:
    return {"ts": ts, "seq": seq, "values": {"fill_pct": fill}}


def _hostile(now_ms: int) -> list[tuple[str, bytes, str]]:
    """(topic, payload, the reason it must be refused for)."""
    good = _reading(now_ms - 60_000, 1)
    return [
        (TOPIC, b"[" * 5000, "too_large"),  # nesting that once raised RecursionError
        (TOPIC, b'{"ts": ' + b"9" * 400 + b', "values": {"fill_pct": 1}}', "future_timestamp"),
        (TOPIC, json.dumps({**good, "seq": 2**70}).encode(), "bad_schema"),
        (TOPIC, json.dumps({**good, "ts": -5}).encode(), "out_of_range"),
        (TOPIC, json.dumps(good).encode("utf-16"), "malformed_json"),
        (TOPIC, json.dumps({**good, "pad": "x" * 100_000}).encode(), "too_large"),
        ("citygw/v1/" + "D" * 10_000 + "/telemetry", json.dumps(good).encode(), "too_large"),
        (TOPIC, b"\xff\xfe\x00garbage", "malformed_json"),
        ("citygw/v1/NOT-REGISTERED/telemetry", json.dumps(good).encode(), "unknown_device"),
    ]


def _publish(stack: Stack, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hostile-device")
    client.connect("127.0.0.1", stack.broker.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def test_hostile_messages_are_dead_letters_and_the_readings_behind_them_are_stored(tmp_path):
    stack = Stack(tmp_path)
    stack.start()
    try:
        now_ms = int(time.time() * 1000)
        hostile = _hostile(now_ms)
        good = [
            (TOPIC, json.dumps(_reading(now_ms - 30_000 + i * 1000, 10 + i)).encode())
            for i in range(3)
        ]
        _publish(stack, [(t, p) for t, p, _ in hostile] + good)

        expected: dict[str, int] = {}
        for _, _, reason in hostile:
            expected[reason] = expected.get(reason, 0) + 1

        def settled() -> bool:
            stats = stack.gateway_stats()
            return stats["readings_stored"] == 3 and sum(stats["rejected"].values()) == len(hostile)

        wait_until(settled, "3 readings stored and every hostile message refused", 60)
        assert stack.gateway.proc.poll() is None, stack.gateway.tail()
        stats = stack.gateway_stats()
        assert stats["rejected"] == expected
        assert stats["parts"]["consume"]["restarts"] == 0
        rows = stack.gateway_http.get("/api/v1/dead-letters", params={"limit": 100}).json()
        long_topic = [r for r in rows["dead_letters"] if r["topic"].startswith("citygw/v1/DDD")]
        assert len(long_topic) == 1 and len(long_topic[0]["topic"]) <= 256

        # A restart (nothing redelivered, since everything was acknowledged after commit)
        # leaves the same counts: no crash loop, no second dead letter.
        stack.gateway.kill()
        stack.start_gateway()
        _publish(stack, [(TOPIC, json.dumps(_reading(now_ms - 1000, 99)).encode())])
        wait_until(lambda: stack.gateway_stats()["readings_stored"] == 4, "a 4th reading", 30)
        assert stack.gateway_stats()["rejected"] == expected
    finally:
        stack.stop()
