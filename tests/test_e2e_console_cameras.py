"""The console's Cameras page in a real browser, on a running gateway analysing a camera.

``citygw run`` reads a rendered street clip (tests/test_api_console.py's
``rendered_street_clip``: a stall in Z-STALL, bags in Z-DUMP, people outside both) with
the shipped model; a viewer opens the Cameras page and sees the last analysed frame, with
what the rules were given for it listed beside the picture: the stall in its zone, the
people outside every zone. The screenshot is saved under the test's tmp folder.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_api_console import MODEL, rendered_street_clip
from test_e2e_console import CHROMIUM, WAIT_MS, _add_user, _go, _page, _sign_in

from harness import Stack, wait_until

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is missing (make test installs it)"
)
playwright = pytest.importorskip("playwright.sync_api")


def test_a_viewer_sees_the_last_analysed_frame_and_what_it_held(tmp_path):
    _, clip, zones = rendered_street_clip(tmp_path)
    camera = {"id": "CAM-A", "url": str(clip), "decoder": "opencv", "analyse_fps": 5,
              "zones": zones}  # fmt: skip
    stack = Stack(tmp_path, video={"cameras": [camera], "detector": {"model": str(MODEL)}})
    stack.start()
    try:
        _add_user(stack, "watch", "viewer")

        def analysed() -> bool:
            shown = stack.gateway_stats()["video"]
            return shown["cameras"]["CAM-A"]["status"] == "ended" and shown["frames_analysed"] > 0

        wait_until(analysed, "the clip analysed to its end", 30, stack.gateway)
        base = f"http://127.0.0.1:{stack.api_port}"
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=str(CHROMIUM))
            try:
                errors: list[str] = []
                page = _page(browser, errors)
                _sign_in(page, base, "watch")
                _go(page, base, "cameras", "section.camera[data-camera=CAM-A] li[data-zone]")
                frame = page.locator("section.camera img.frame")
                frame.wait_for(state="visible", timeout=WAIT_MS)  # hidden if it fails to load
                seen = page.locator("section.camera ul.observations li")
                stalls = seen.filter(has_text="stall #")
                assert stalls.count() == 1 and "Z-STALL" in stalls.inner_text()
                assert page.locator('ul.observations li[data-zone=""]').count() >= 1
                picture = frame.screenshot()
                page.screenshot(path=tmp_path / "cameras.png", full_page=True)
            finally:
                browser.close()
        assert errors == []
    finally:
        stack.stop()
    # What the browser shows is the frame with the stall boxed in red (BGR 0, 0, 255).
    shown = cv2.imdecode(np.frombuffer(picture, np.uint8), cv2.IMREAD_COLOR)
    red = (shown[:, :, 2] > 200) & (shown[:, :, 1] < 60) & (shown[:, :, 0] < 60)
    assert red.sum() > 200
