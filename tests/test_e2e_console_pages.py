"""The console's reading pages in a real browser (Debian's chromium), on a gateway's API on
loopback whose store the real pipeline filled, and whose camera the real video runtime
analysed with the shipped model: a viewer sees a sparkline per device on Devices, the
refusals by reason with their payloads on Dead letters, a camera incident's evidence
pictures (annotated and "before") on its page, and the camera's fps as a number at first
sight on Cameras. Screenshots are saved under the test's tmp folder."""

from __future__ import annotations

from dataclasses import replace

import pytest
from api_principals import PASSWORD, add_user
from console_served import chromium, close_served, now_ms, served_gateway, telemetry
from test_api_console import MODEL, rendered_street_clip
from test_e2e_console import CHROMIUM, WAIT_MS, _go, _page, _sign_in

from detectors.backends import load_detector
from domain import Alert, AlertState, Location, Priority
from simulators.video import BUILTIN_VIDEO_SCENE, load_scene, render_frame

from harness import wait_until

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is missing (make test installs it)"
)
pytest.importorskip("playwright.sync_api")

MIN_MS = 60_000
LOADED = "img => img.complete && img.naturalWidth > 0"
FRAME_SHOWN = (
    "() => { const i = document.querySelector('section.camera[data-camera=CAM-A] img.frame');"
    " return i !== null && i.complete && i.naturalWidth > 0; }"
)  # the page redraws its cards every 2 s: asked anew each time


def _stage_readings_and_refusals(gw, now: int) -> None:
    """An hour of BIN-010 filling up, and three messages refused for three reasons."""
    readings = [
        telemetry(
            "BIN-010", now - (60 - 5 * n) * MIN_MS, {"fill_pct": 40 + 4 * n, "battery_pct": 80}
        )
        for n in range(12)
    ]
    refused = [
        telemetry("BIN-001", now, {"fill_pct": "full"}),
        telemetry("NOT-REGISTERED", now, {"fill_pct": 50}),
        replace(telemetry("BIN-020", now, {}), payload=b"{not json"),
    ]
    gw.pipeline.process(readings + refused, now)


def _camera_incident(gw, scene, now: int) -> str:
    """The camera's stall as the gateway files it: its step fed 10 s of the empty street
    and 10 s with the stall, half a second apart, each frame through the shipped model as
    the runtime does (which reads a file faster than it plays: a "before" picture needs the
    object standing for a while); then the alert with the runtime's pictures (the frame with
    its boxes and zone drawn, and the zone's "before")."""
    settings = gw.config.video.detector
    detector = load_detector(settings.model, settings.backend, settings.conf, settings.iou)
    step = gw.video.steps["CAM-A"]
    start = now - 60_000
    for n in range(40):
        picture = render_frame(scene, "CAM-A", 5.0 if n < 20 else 30.0)
        ts = start + n * 500
        if step.needs_inference(picture, ts):
            step.detected(detector.detect([picture])[0])
        step.analyse(picture, ts)
    drawn, before = gw.video.evidence("CAM-A", "Z-STALL", list(step.analysed.observations))
    assert before is not None
    alert = Alert(
        key="CAM-A/Z-STALL/street_vending", source_id="CAM-A", rule_id="street_vending",
        state=AlertState.FIRING, class_code="02019", priority=Priority.NORMAL,
        location=Location(26.0831, 119.2951, "五四路人行道", "350102003001001"), ts=now,
        summary="stall in Z-STALL", kind="video", zone="Z-STALL", origin="video",
    )  # fmt: skip
    pictured = replace(alert, media=gw.evidence.save(alert, drawn, before, now // 1000))
    [command] = gw.pipeline.apply_alerts([pictured], now)
    return command.incident_id


def test_a_viewer_reads_sparklines_dead_letters_evidence_and_camera_fps(tmp_path):
    _, clip, zones = rendered_street_clip(tmp_path)
    camera = {"id": "CAM-A", "url": str(clip), "decoder": "opencv", "analyse_fps": 5,
              "zones": zones}  # fmt: skip
    served = served_gateway(
        tmp_path, video={"cameras": [camera], "detector": {"model": str(MODEL)}}
    )
    gw = served.gateway
    shots = tmp_path / "screenshots"
    shots.mkdir()
    started = False
    try:
        now = now_ms()
        _stage_readings_and_refusals(gw, now)
        incident = _camera_incident(gw, load_scene(BUILTIN_VIDEO_SCENE), now)
        gw.video.start()  # then the clip through the runtime: its rates, its last frame
        started = True
        wait_until(lambda: gw.video.snapshot()["cameras"]["CAM-A"]["status"] == "ended",
                   "the clip analysed to its end", 30)  # fmt: skip
        add_user(served, "watch", "viewer")
        with chromium() as browser:
            errors: list[str] = []
            page = _page(browser, errors)
            _sign_in(page, served.url, "watch", PASSWORD)
            _go(page, served.url, "cameras", "section.camera[data-camera=CAM-A] .figures b")
            fps = page.inner_text("section.camera[data-camera=CAM-A] .figure.fps b")
            assert float(fps) > 0, fps  # at first sight, not after a second poll
            page.wait_for_function(FRAME_SHOWN, timeout=WAIT_MS)
            page.screenshot(path=shots / "cameras.png", full_page=True)

            _go(page, served.url, "devices", "tr[data-device=BIN-010] td.spark-cell svg path")
            spark = page.locator("tr[data-device=BIN-010] td.spark-cell svg path").first
            assert len(spark.get_attribute("d").split("L")) == 12  # a point per reading
            page.screenshot(path=shots / "devices.png", full_page=True)

            _go(page, served.url, "dead-letters", "a.chip[data-reason]")
            reasons = page.locator("a.chip[data-reason]")
            counted = sorted(reasons.nth(n).get_attribute("data-reason")
                             for n in range(reasons.count()))  # fmt: skip
            assert len(counted) == 3, counted
            refused = page.locator("table.dead-letters tbody tr")
            assert refused.count() == 3
            broken = page.locator(
                "table.dead-letters tr:has(code:text-is('citygw/v1/BIN-020/telemetry'))"
            )
            broken.locator("details summary").click()
            assert broken.locator("pre.payload").inner_text() == "{not json"
            page.screenshot(path=shots / "dead-letters.png", full_page=True)

            _go(page, served.url, f"incidents/{incident}", "figure.evidence-pair img")
            pictures = page.locator("figure.evidence-pair img")
            assert pictures.count() == 2  # annotated and "before"
            for n in range(2):
                pictures.nth(n).scroll_into_view_if_needed()
                picture = pictures.nth(n).element_handle()
                page.wait_for_function(LOADED, arg=picture, timeout=WAIT_MS)
            page.screenshot(path=shots / "incident-evidence.png", full_page=True)
        assert errors == []
    finally:
        close_served(served, video_started=started)
