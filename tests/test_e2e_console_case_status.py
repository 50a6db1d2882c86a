"""The console shows the case status synced back, in a real browser (Debian's chromium)
against the gateway's API on loopback: the incidents list has each case's latest status
from the platform, and an incident's page has it with the platform's time and how the
gateway learnt it, and every status in the timeline. The screenshot is saved under the
test's tmp folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from api_principals import PASSWORD, Deployments, add_user
from test_e2e_console import CHROMIUM, _go, _page, _sign_in

from case_bridge import outbox
from gateway import store

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is missing (make test installs it)"
)
playwright = pytest.importorskip("playwright.sync_api")

T0_MS = 1_795_000_000_000
INCIDENT = {"id": "INC-7", "status": "open", "class_code": "06042", "priority": "normal",
            "location": {"address": "朝阳路 1 号", "grid_code": "G-1"}, "opened_ts": T0_MS,
            "alert_keys": ["BIN-001/bin_overflow"]}  # fmt: skip


def test_a_viewer_sees_the_case_s_platform_status_and_its_history(tmp_path: Path) -> None:
    deployments = Deployments(tmp_path)
    try:
        served = deployments.serve(cookie_secure=False)
        conn = served.gateway.conn
        store.write_states(conn, [("incident", "INC-7", INCIDENT)])
        outbox.link_case(conn, "INC-7", "C-7", T0_MS)
        outbox.record_status(conn, "C-7", "handling", "2026-11-21T08:00:00+00:00", "poll", T0_MS)
        outbox.record_status(conn, "C-7", "verifying", "2026-11-21T08:05:00Z", "webhook", T0_MS)
        add_user(served, "watch", "viewer")
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=str(CHROMIUM))
            try:
                errors: list[str] = []
                page = _page(browser, errors)
                _sign_in(page, served.url, "watch", PASSWORD)
                _go(page, served.url, "incidents", "a[data-incident=INC-7]")
                assert "verifying" in page.inner_text("tr:has(a[data-incident=INC-7])")
                _go(page, served.url, "incidents/INC-7", "li.event[data-type=platform_status]")
                shown = page.locator("li.event[data-type=platform_status] .event-body")
                assert [text.split(" · ")[0] for text in shown.all_inner_texts()] == [
                    "handling", "verifying",
                ]  # fmt: skip
                sources = page.locator("li.event[data-type=platform_status] .via")
                assert [sources.nth(n).get_attribute("data-source") for n in (0, 1)] == [
                    "poll", "webhook",
                ]  # fmt: skip
                latest = page.locator("p.platform-status")
                assert latest.get_attribute("data-status") == "verifying"
                page.screenshot(path=tmp_path / "incident-case-status.png", full_page=True)
            finally:
                browser.close()
        assert errors == []
    finally:
        deployments.close()
