"""End to end in a real browser: the operations console served by a running gateway.

Debian's chromium driven by Playwright, against real mosquitto, the bundled platform,
``citygw run`` and the device simulator (the builtin fleet), with users made by
``citygw users add``. An operator signs in, watches the live alerts page while the fleet
runs and sees its alerts arrive over the stream, finds the lid-opened cover's incident on
the map and clicks through to its timeline, silences a cover and sees its next alert held
by that silence (on the live page, on the map, and no case filed), changes a threshold
after its backtest preview (cases removed, by class and per device) and finds the change
in the audit log. A viewer then finds every write button disabled, a forced one refused
by the API and said so on the page, the labels in English at a switch, and every write
refused at the API with 403.

Screenshots of each step are saved under the test's tmp folder (``screenshots/``).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from harness import CLI, Stack

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is missing (make test installs it)"
)
playwright = pytest.importorskip("playwright.sync_api")

PASSWORD = "console-e2e-password-1"
WAIT_MS = 20_000
CASES_STAGED = 5  # the builtin scenario's expected cases


def _add_user(stack: Stack, name: str, role: str) -> None:
    subprocess.run(
        [*CLI, "users", "add", name, "--role", role, "-c", str(stack.config_path),
         "--password-stdin"],
        input=PASSWORD + "\n", text=True, check=True, capture_output=True, timeout=30,
    )  # fmt: skip


def _sign_in(page, base: str, name: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/console/")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    page.click("form.signin button[type=submit]")
    page.wait_for_selector("header.top .user", timeout=WAIT_MS)


def _go(page, base: str, route: str, ready: str) -> None:
    page.goto(f"{base}/console/#/{route}")
    page.wait_for_selector(ready, timeout=WAIT_MS)


def _publish_lid_open(stack: Stack, device: str) -> int:
    """One cover reading with its lid open, stamped now; returns its time."""
    ts = int(time.time() * 1000)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cover")
    client.connect("127.0.0.1", stack.broker.port)
    client.loop_start()
    try:
        body = {"ts": ts, "values": {"tilt_deg": 0.6, "lid_open": True, "battery_pct": 88}}
        topic = f"citygw/v1/{device}/telemetry"
        client.publish(topic, json.dumps(body), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()
    return ts


def test_operator_acts_and_viewer_is_refused_in_a_real_browser(tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    stack = Stack(tmp_path)
    stack.start()
    try:
        _add_user(stack, "ops", "operator")
        _add_user(stack, "watch", "viewer")
        base = f"http://127.0.0.1:{stack.api_port}"
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=str(CHROMIUM))
            try:
                errors = _operator(browser, stack, base, shots)
                errors += _viewer(browser, stack, base, shots)
            finally:
                browser.close()
        assert errors == []
    finally:
        stack.stop()


def _page(browser, errors: list[str]):
    page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    return page


def _operator(browser, stack: Stack, base: str, shots: Path) -> list[str]:
    errors: list[str] = []
    page = _page(browser, errors)
    _sign_in(page, base, "ops")
    assert page.inner_text("header.top .user").startswith("ops")

    # The live page is open and its stream connected before the fleet sends anything.
    _go(page, base, "alerts", ".stream-status[data-status=live]")
    assert page.locator(".alert-table tbody tr[data-alert]").count() == 0
    simulator = stack.simulator(time_scale=600)
    lid = page.locator('tr[data-key="MH-001/cover_anomaly"].fresh').last
    lid.wait_for(timeout=WAIT_MS)
    incident = lid.locator("a[href^='#/incidents/']").inner_text()
    page.screenshot(path=shots / "01-live-alerts.png", full_page=True)
    assert simulator.proc.wait(60) == 0
    stack.wait_caught_up(60)

    # On the map: the incident of the opened lid, among the staged ones; a click opens it.
    _go(page, base, "map", f'g.incident[data-incident="{incident}"]')
    page.wait_for_function(
        f"document.querySelectorAll('g.incident').length === {CASES_STAGED}", timeout=WAIT_MS
    )
    assert page.locator("g.device").count() == 9
    page.screenshot(path=shots / "02-map.png", full_page=True)
    page.click(f'g.incident[data-incident="{incident}"] path')  # its flag, beside the device
    page.wait_for_selector("li.event[data-type=case_filed]", timeout=WAIT_MS)
    assert page.locator("li.event[data-type=alert]").count() >= 1
    page.screenshot(path=shots / "03-incident.png", full_page=True)

    # A silence on MH-002; its lid opened afterwards is held by it, on every page.
    _go(page, base, "silences", "button.create-silence")
    page.fill("input[name=matcher-value]", "MH-002")
    page.fill(".silence-form input[name=reason]", "井盖更换施工")
    page.click("button.create-silence")
    page.wait_for_selector("tr[data-silence][data-status=active]", timeout=WAIT_MS)
    silence_id = page.get_attribute("tr[data-silence][data-status=active]", "data-silence")
    _go(page, base, "alerts", ".stream-status[data-status=live]")
    _publish_lid_open(stack, "MH-002")
    muted = page.locator('tr[data-key="MH-002/cover_anomaly"].fresh')
    muted.wait_for(timeout=WAIT_MS)
    assert muted.get_attribute("data-held") == f"silence:{silence_id}"
    holder = muted.locator(f".holder.silence[data-silence='{silence_id}']")
    assert "井盖更换施工" in holder.inner_text()
    page.screenshot(path=shots / "04-muted-alert.png", full_page=True)
    _go(page, base, "map", 'g.device[data-device="MH-002"][data-state=alerting][data-muted=true]')
    assert stack.gateway_stats()["held"]["silence"] == 1
    assert len(stack.cases()) == CASES_STAGED

    # A threshold changed only after its backtest preview: 98 % would file neither bin case.
    _go(page, base, "thresholds", 'button[data-edit="kinds.bin.fill_fire_pct"]')
    page.click('button[data-edit="kinds.bin.fill_fire_pct"]')
    page.fill("input[name=value]", "98")
    page.fill(".edit-form input[name=reason]", "收运车辆增加，满溢阈值上调")
    assert page.is_disabled("button.apply")
    page.click("button.preview")
    page.wait_for_selector(".count-proposed", timeout=WAIT_MS)
    page.wait_for_selector("figure[data-series] svg path", timeout=WAIT_MS)
    counts = [page.inner_text(f".count-{c}") for c in ("current", "proposed", "added", "removed")]
    assert counts == [str(CASES_STAGED), str(CASES_STAGED - 2), "+0", "−2"]
    removed = page.locator("tr[data-change=removed]")
    keys = sorted(removed.nth(i).get_attribute("data-key") for i in range(removed.count()))
    assert keys == ["BIN-010/bin_overflow", "BIN-020/bin_overflow"]
    page.screenshot(path=shots / "05-threshold-preview.png", full_page=True)
    page.click("button.apply")
    page.wait_for_selector("tr[data-version='2']", timeout=WAIT_MS)
    assert page.inner_text('td.value[data-path="kinds.bin.fill_fire_pct"]') == "98"

    # The audit log has it, who and why, before and after.
    _go(page, base, "audit?action=thresholds.set", "tr[data-action='thresholds.set']")
    entry = page.inner_text("tr[data-action='thresholds.set']")
    assert "ops" in entry and "收运车辆增加" in entry and "90" in entry and "98" in entry
    page.screenshot(path=shots / "06-audit.png", full_page=True)
    page.context.close()
    return errors


# Every write of the console's pages, as the API sees it: (method, path, JSON body).
WRITES = [
    ("POST", "/api/v1/silences",
     {"matchers": {"device": "BIN-001"}, "author": "watch", "reason": "r", "duration_s": 60}),
    ("PATCH", "/api/v1/silences/1", {"author": "watch", "reason": "r", "duration_s": 7200}),
    ("DELETE", "/api/v1/silences/1?author=watch&reason=r", None),
    ("PUT", "/api/v1/thresholds",
     {"changes": {"bin.fill_fire_pct": 50}, "author": "watch", "reason": "r"}),
    ("POST", "/api/v1/thresholds/rollback", {"version": 1, "author": "watch", "reason": "r"}),
    ("POST", "/api/v1/backtests", {"since_ms": 0, "until_ms": 1000, "changes": {}}),
    ("POST", "/api/v1/outbox/requeue", None),
    ("POST", "/api/v1/duplicates/INC-a~INC-b/merge", {"into": "INC-b", "reason": "r"}),
    ("POST", "/api/v1/duplicates/INC-a~INC-b/dismiss", {"reason": "r"}),
]  # fmt: skip


def _viewer(browser, stack: Stack, base: str, shots: Path) -> list[str]:
    errors: list[str] = []
    page = _page(browser, errors)
    _sign_in(page, base, "watch")
    disabled = {}
    for route, ready in [("silences", "tr[data-silence] button.remove"),
                         ("thresholds", "button.apply"), ("outbox", "button.requeue")]:  # fmt: skip
        _go(page, base, route, ready)
        buttons = page.locator("button[data-write]")
        disabled[route] = [buttons.nth(i).is_disabled() for i in range(buttons.count())]
    assert disabled == {
        "silences": [True, True, True],  # create, extend, remove
        "thresholds": [True, True],  # preview, apply
        "outbox": [True],  # requeue
    }

    # A write forced through the UI is refused by the API, and the page says why.
    _go(page, base, "silences", "button.create-silence")
    page.fill("input[name=matcher-value]", "BIN-001")
    page.fill(".silence-form input[name=reason]", "viewer tries")
    page.eval_on_selector("button.create-silence", "b => b.removeAttribute('disabled')")
    page.click("button.create-silence")
    refusal = page.wait_for_selector(".message.refused", timeout=WAIT_MS).inner_text()
    assert "operator" in refusal
    page.screenshot(path=shots / "07-viewer-refused.png", full_page=True)

    # The labels switch to English (domain terms stay Chinese beside them).
    page.click("header.top button.lang")
    page.wait_for_selector("a[data-nav=map]:text-is('Map')", timeout=WAIT_MS)
    assert page.inner_text("a[data-nav=incidents]") == "Incidents & 案件"
    _go(page, base, "map", "g.device")
    page.screenshot(path=shots / "08-viewer-map-english.png", full_page=True)

    # At the API, with the viewer's session cookie and CSRF token: 403 for each write.
    session = page.request.get(f"{base}/api/v1/session").json()
    assert session["role"] == "viewer"
    answers = []
    for method, path, body in WRITES:
        answer = page.request.fetch(
            base + path, method=method, headers={"X-CSRF-Token": session["csrf"]},
            data=json.dumps(body) if body is not None else None,
        )  # fmt: skip
        answers.append((method, path.split("?")[0], answer.status, answer.json()["required_role"]))
    assert answers == [(m, p.split("?")[0], 403, "operator") for m, p, _ in WRITES]
    silences = stack.gateway_http.get("/api/v1/silences").json()["silences"]
    assert [(s["id"], s["status"]) for s in silences] == [(1, "active")]
    assert stack.gateway_http.get("/api/v1/thresholds").json()["version"] == 2
    page.context.close()
    return errors
