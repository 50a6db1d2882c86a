"""End to end: a sensor case filed through the real gateway process, mosquitto and the
bundled platform carries its device's excerpt of readings as an evidence file; its signed
link, fetched from the gateway, serves ``application/json`` bytes with exactly the SHA-256
and size the case recorded, holding the readings the device published before the alert.
Retention expires excerpts as it expires pictures."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from test_sensor_excerpts import ALERT

from domain import AlertState
from gateway import retention, store
from gateway.evidence import EvidenceWriter
from gateway.evidence_links import EvidenceLinks
from gateway.evidence_settings import SensorExcerptSettings
from gateway.sensor_excerpts import SensorExcerpts

from harness import Stack, wait_until

DEVICE = "MH-002"  # a manhole cover of the builtin registry: an open lid files at once
CALM = [{"tilt_deg": 0.5 + i / 10, "lid_open": False, "battery_pct": 88.0} for i in range(4)]
OPEN = {"tilt_deg": 2.0, "lid_open": True, "battery_pct": 88.0}


def publish_all(s: Stack, readings: list[dict], first_seq: int) -> list[int]:
    """Publish each reading at QoS 1, a millisecond apart at least; return their times."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", s.broker.port)
    client.loop_start()
    times = []
    for seq, values in enumerate(readings, first_seq):
        ts = int(time.time() * 1000)
        times.append(ts)
        doc = {"ts": ts, "seq": seq, "values": values}
        info = client.publish(f"citygw/v1/{DEVICE}/telemetry", json.dumps(doc), qos=1)
        info.wait_for_publish(5)
        time.sleep(0.002)
    client.disconnect()
    client.loop_stop()
    return times


def test_a_sensor_case_carries_the_device_s_excerpt_served_with_its_hash(stack):
    s = stack()
    wait_until(lambda: s.gateway_stats()["readings_stored"] == 0, "the gateway's stats", 30)
    calm_ts = publish_all(s, CALM, 1)
    wait_until(lambda: s.gateway_stats()["readings_stored"] == len(CALM), "calm readings", 30)
    [open_ts] = publish_all(s, [OPEN], len(CALM) + 1)

    def filed() -> list[dict]:
        return [c for c in s.cases() if any(e["source_id"] == DEVICE for e in c["evidence"])]

    wait_until(lambda: len(filed()) == 1, "the open lid's case", 30, s.gateway)
    [case] = filed()
    [item] = case["evidence"]
    assert (item["state"], item["ts"]) == (str(AlertState.FIRING), open_ts)
    [file] = item["media_files"]
    assert file["url"].startswith("/evidence/") and ".json?" in file["url"]
    served = httpx.get(f"http://127.0.0.1:{s.api_port}{file['url']}", timeout=5)  # no token
    assert served.status_code == 200, served.text
    assert served.headers["content-type"] == "application/json"
    data = served.content
    assert (hashlib.sha256(data).hexdigest(), len(data)) == (file["sha256"], file["bytes"])
    document = json.loads(data)
    assert (document["device_id"], document["kind"]) == (DEVICE, "manhole_cover")
    assert document["alert"]["values"] == OPEN
    assert document["thresholds"]["tilt_fire_deg"] == 15.0
    assert document["readings_left_out"] == 0
    published = enumerate(zip(calm_ts, CALM, strict=True), 1)
    assert [(r["ts"], r["seq"], r["suspect"], r["values"]) for r in document["readings"]] == [
        (ts, seq, False, values) for seq, (ts, values) in published
    ]
    assert s.gateway_stats()["evidence_refused"] == {}


def test_retention_expires_excerpts_as_it_expires_pictures(tmp_path: Path):
    conn = store.connect(tmp_path / "gateway.db", "NORMAL")
    folder = tmp_path / "evidence"
    writer = EvidenceWriter(folder, EvidenceLinks(b"k" * 32, 60), max_picture_bytes=2**20)
    made = SensorExcerpts(conn, writer, SensorExcerptSettings(), {"WL-001": "water_level"})
    assert len(made.add(ALERT).media) == 1
    [excerpt] = folder.iterdir()
    os.utime(excerpt, (time.time() - 2 * 86_400, time.time() - 2 * 86_400))
    assert retention.expire_evidence(folder, time.time() - 86_400, 2**30) == 1
    assert list(folder.iterdir()) == []
    conn.close()
