"""``/metrics`` of a running gateway: mosquitto, the bundled platform and the gateway as
processes, InfluxDB's write endpoint as a stand-in (simulators/influxdb_stand_in.py: no
InfluxDB 2 installs here), a camera reading an H.264 file through the shipped model.
Readings in and refused by reason, the camera's frames, inference and lag, platform
latency, and the history export's lag while InfluxDB holds its writes and after, come out
exactly; and every metric the Grafana dashboard asks for is one this gateway exports."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_deploy_observability import dashboard, dashboard_metric_names
from test_e2e_hostile_input import _publish as publish

from gateway.metrics import GatewayMetrics
from simulators.influxdb_stand_in import InfluxV2StandIn

from harness import Stack, wait_until

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "citygw-street-v2.onnx"
FRAMES = 15  # 3 s at 5 fps, all analysed at analyse_fps 5
ZONE = {
    "id": "Z1", "type": "no_dumping", "polygon": [[0.1, 0.5], [0.9, 0.5], [0.9, 0.95], [0.1, 0.95]],
    "lat": 26.0812, "lon": 119.2967, "grid_code": "350102001001001",
}  # fmt: skip
pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")


def h264_clip(path: Path) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=5:duration=3",
         "-c:v", "libx264", "-g", "1", "-pix_fmt", "yuv420p", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def exported_names(text: str) -> set[str]:
    """Series names in an exposition, and the families declared without a sample yet (a
    counter with no label value seen), under the names a query would use."""
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        names |= {family.name, f"{family.name}_total"} if family.type == "counter" else {
            family.name, f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count",
        }  # fmt: skip
    return names


def test_a_running_gateway_exports_the_issues_figures_and_the_dashboards_metrics(tmp_path):
    clip = h264_clip(tmp_path / "street.mp4")
    with InfluxV2StandIn() as influx:
        influx.hang()  # InfluxDB holds every write: the export lags
        stack = Stack(
            tmp_path,
            video={
                "cameras": [{"id": "CAM-1", "url": str(clip), "analyse_fps": 5, "zones": [ZONE]}],
                "detector": {"model": str(MODEL)},
            },
            config={"history": {"influxdb": {
                "url": influx.url, "org": influx.org, "bucket": influx.bucket,
                "token": influx.token, "flush_interval_s": 0.1,
            }}},
        )  # fmt: skip
        stack.start()
        try:
            run(stack, influx)
        finally:
            influx.release()
            stack.stop()


def run(stack: Stack, influx: InfluxV2StandIn) -> None:
    now_ms = int(time.time() * 1000)
    topic = "citygw/v1/BIN-001/telemetry"
    readings = [
        json.dumps({"ts": now_ms - 60_000 + i, "seq": i, "values": {"fill_pct": 40.0}}).encode()
        for i in range(1, 4)
    ]
    refused = [
        (topic, b"\xff\xfe not json"),
        ("citygw/v1/NOT-REGISTERED/telemetry", readings[0]),
    ]
    publish(stack, [(topic, reading) for reading in readings] + refused)

    def settled() -> bool:
        s = stack.gateway_stats()
        video = s["video"]
        camera = video["cameras"]["CAM-1"]
        return (
            s["readings_stored"] == 3
            and sum(s["rejected"].values()) == 2
            and influx.held >= 1
            and camera["status"] == "ended"
            and camera["frames"] == camera["frames_analysed"] + video.get("frames_dropped", 0)
            and "changed_cases" in s["delivery"]["calls"]
        )

    wait_until(settled, "readings stored, the clip analysed, status sync timed", 30)
    text = stack.gateway_http.get("/metrics").text
    got = samples(text)
    assert got[("citygw_readings_accepted_total", ())] == 3
    assert got[("citygw_rejected_total", (("reason", "malformed_json"),))] == 1
    assert got[("citygw_rejected_total", (("reason", "unknown_device"),))] == 1
    assert got[("citygw_mqtt_subscribed", ())] == 1
    cam = (("camera", "CAM-1"),)
    read = got[("citygw_camera_frames_read_total", cam)]
    analysed = got[("citygw_camera_frames_analysed_total", cam)]
    assert read == FRAMES
    assert analysed + got[("citygw_video_frames_dropped_total", ())] == FRAMES
    assert 1 <= got[("citygw_camera_inferences_total", cam)] <= analysed
    assert got[("citygw_camera_inference_seconds_total", cam)] > 0
    assert got[("citygw_camera_lag_seconds", cam)] >= 0
    assert got[("citygw_camera_online", cam)] == 0  # the file ended
    listed = (("call", "changed_cases"),)
    assert got[("citygw_platform_call_seconds_count", listed)] >= 1
    assert (
        got[("citygw_platform_call_seconds_bucket", (*listed, ("le", "+Inf")))]
        == got[("citygw_platform_call_seconds_count", listed)]
    )
    # The oldest reading waiting for InfluxDB is a minute old.
    assert got[("citygw_influxdb_pending", ())] == 3
    assert 60 <= got[("citygw_influxdb_export_lag_seconds", ())] < 120

    influx.release()
    wait_until(lambda: stack.gateway_stats()["influxdb"]["exported"] == 3, "export done", 30)
    after = samples(stack.gateway_http.get("/metrics").text)
    assert after[("citygw_influxdb_export_lag_seconds", ())] == 0
    assert after[("citygw_influxdb_pending", ())] == 0
    assert len(influx.points) == 3

    # What Gateway.stats() gives beyond the parts (open incidents, the outbox's oldest
    # command) goes through the same collector; defaults stand in until it gives them.
    stats = {"incidents_open": 0, "outbox_oldest_pending_ms": None, **stack.gateway_stats()}
    collected = GatewayMetrics(lambda: stats).render().decode()
    exported = exported_names(text) | exported_names(collected)
    missing = dashboard_metric_names(dashboard()) - exported
    assert not missing, f"the dashboard asks for metrics the gateway does not export: {missing}"
