"""The console's operator desks in a real browser (Debian's chromium), on a gateway's API on
loopback with a grids file, merge settings that suspect two bins at one spot, and its real
pipeline and store:

- an operator merges a suspected duplicate pair (a reason is required first), sees it
  decided and its audit entry with that reason; extends a silence by a chosen time and
  removes it, each with a typed reason the audit log keeps as why;
- a viewer sees another pair, still open, read-only;
- an admin finds the effective config page, secrets shown as ***; the others have no link
  to it;
- the map draws the grids file's polygons, the crowded bins' labels apart, and the English
  navigation on one line at 1440 px.

Screenshots are saved under the test's tmp folder."""

from __future__ import annotations

import pytest
from api_principals import PASSWORD, add_user
from console_served import chromium, close_served, now_ms, served_gateway
from test_api_console import EXAMPLE_GRIDS
from test_e2e_console import CHROMIUM, WAIT_MS, _go, _page, _sign_in

from domain import Alert, AlertState, Location, Priority

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is missing (make test installs it)"
)
pytest.importorskip("playwright.sync_api")

PLACE = Location(26.0875, 119.2950, "鼓屏路36号人行道 垃圾收集点", "350102003002004")
ELSEWHERE = Location(26.0921, 119.2980, "湖东路188号公交站旁", "350102001002003")
MERGE = {"duplicates": {"merge_above": 0.99, "suspect_above": 0.5}}
OVERLAP = """labels => {
  const boxes = labels.map((l) => l.getBoundingClientRect());
  return boxes.some((a, i) => boxes.some((b, j) => i < j && a.left < b.right && b.left < a.right
    && a.top < b.bottom && b.top < a.bottom));
}"""


def _full(device: str, ts: int, place: Location = PLACE) -> Alert:
    return Alert(f"{device}/bin_overflow", device, "bin_overflow", AlertState.FIRING, "06042",
                 Priority.URGENT, place, ts, values={"fill_pct": 96.0},
                 summary=f"{device} fill 96 %", kind="bin")  # fmt: skip


def test_operators_merge_and_silence_with_reasons_viewers_read_admins_see_config(tmp_path):
    served = served_gateway(tmp_path, merge=MERGE, cases={"grids_file": str(EXAMPLE_GRIDS)})
    gw = served.gateway
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        now = now_ms()
        first, second = gw.pipeline.apply_alerts(
            [_full("BIN-020", now - 60_000), _full("BIN-021", now)], now
        )
        pair = f"{second.incident_id}~{first.incident_id}"
        third, fourth = gw.pipeline.apply_alerts(
            [_full("BIN-001", now - 60_000, ELSEWHERE), _full("BIN-002", now, ELSEWHERE)], now
        )
        left_open = f"{fourth.incident_id}~{third.incident_id}"  # for the viewer to look at
        for name, role in (("ops", "operator"), ("watch", "viewer"), ("root", "admin")):
            add_user(served, name, role)
        with chromium() as browser:
            errors: list[str] = []
            _operator(_page(browser, errors), served.url, pair, first.incident_id, shots)
            _viewer(_page(browser, errors), served.url, left_open, shots)
            _admin(_page(browser, errors), served.url, shots)
        assert errors == []
    finally:
        close_served(served)


def _operator(page, base: str, pair: str, kept: str, shots) -> None:
    _sign_in(page, base, "ops", PASSWORD)
    assert page.locator("a[data-nav=config]").count() == 0
    card = f"section.dup-pair[data-pair='{pair}']"
    _go(page, base, "duplicates", f"{card} button.merge")
    sides = page.locator(f"{card} .pair-side")
    assert sides.count() == 2 and "06042" in sides.nth(0).inner_text()
    assert "鼓屏路36号" in sides.nth(1).inner_text()
    page.screenshot(path=shots / "01-duplicates.png", full_page=True)
    page.click(f"{card} button.merge[data-into='{kept}']")  # no reason yet: refused here
    assert "reason" in page.inner_text(".message.error").lower() or "原因" in page.inner_text(
        ".message.error"
    )
    page.fill(f"{card} input[name=reason]", "同一收集点，两桶同时满溢，实为一处")
    page.click(f"{card} button.merge[data-into='{kept}']")
    page.wait_for_selector(f"{card}", state="detached", timeout=WAIT_MS)  # no longer open
    _go(page, base, "duplicates?status=merged", f"{card}[data-status=merged] p.decision")
    assert "同一收集点" in page.inner_text(f"{card} p.decision")
    page.screenshot(path=shots / "02-merged.png", full_page=True)
    _go(page, base, "audit?action=duplicate.merge", "tr[data-action='duplicate.merge']")
    entry = page.inner_text("tr[data-action='duplicate.merge']")
    assert "ops" in entry and "同一收集点，两桶同时满溢" in entry and kept in entry

    # A silence extended by 4 h and removed, each with the operator's reason.
    _go(page, base, "silences", "button.create-silence")
    page.fill("input[name=matcher-value]", "MH-002")
    page.fill(".silence-form input[name=reason]", "井盖更换施工")
    page.click("button.create-silence")
    row = page.locator("tr[data-silence][data-status=active]")
    row.wait_for(timeout=WAIT_MS)
    ends = row.locator("td").nth(5).inner_text()
    row.locator("select[name=extend-by]").select_option("14400")
    row.locator("input[name=change-reason]").fill("施工延期，延长四小时")
    row.locator("button.extend").click()
    ended = "document.querySelector('tr[data-silence] td:nth-child(6)')"  # gone while reloading
    page.wait_for_function(f"() => {ended} !== null && {ended}.innerText !== {ends!r}",
                           timeout=WAIT_MS)  # fmt: skip
    row.locator("button.remove").click()  # the reason box was emptied by the reload
    page.wait_for_selector(".message.error", timeout=WAIT_MS)  # a reason first
    row.locator("input[name=change-reason]").fill("施工提前完成")
    row.locator("button.remove").click()
    page.wait_for_selector("tr[data-silence][data-status=expired]", timeout=WAIT_MS)
    page.screenshot(path=shots / "03-silence-removed.png", full_page=True)
    _go(page, base, "audit?target=silence:1", "tr[data-action='silence.remove']")
    whys = {
        action: page.inner_text(f"tr[data-action='{action}'] td:last-child")
        for action in ("silence.create", "silence.extend", "silence.remove")
    }
    assert whys == {"silence.create": "井盖更换施工", "silence.extend": "施工延期，延长四小时",
                    "silence.remove": "施工提前完成"}  # fmt: skip
    page.context.close()


def _viewer(page, base: str, pair: str, shots) -> None:
    _sign_in(page, base, "watch", PASSWORD)
    card = f"section.dup-pair[data-pair='{pair}'][data-status=open]"
    _go(page, base, "duplicates", f"{card} button.dismiss")
    buttons = page.locator(f"{card} button[data-write]")
    assert [buttons.nth(n).is_disabled() for n in range(buttons.count())] == [True] * 3
    assert page.locator("section.dup-pair").count() == 1  # the merged pair is not open
    page.screenshot(path=shots / "04-viewer-duplicates.png", full_page=True)
    page.click("header.top button.lang")
    _go(page, base, "map", "g.grid-cell[data-extent=polygon]")
    assert page.locator("g.grid-cell[data-extent=polygon]").count() == 4
    nav = page.locator("header.top nav a")
    tops = {round(nav.nth(n).bounding_box()["y"]) for n in range(nav.count())}
    assert len(tops) == 1, tops  # one line of navigation in English at 1440 px
    crowded = [f"g.device[data-device={d}] text" for d in ("BIN-010", "BIN-011", "BIN-012")]
    labels = [page.locator(selector).element_handle() for selector in crowded]
    assert page.evaluate(OVERLAP, labels) is False
    page.screenshot(path=shots / "05-viewer-map-english.png", full_page=True)
    page.context.close()


def _admin(page, base: str, shots) -> None:
    _sign_in(page, base, "root", PASSWORD)
    page.click("header.top button.lang")
    page.click("a[data-nav=config]")
    page.wait_for_selector("section.config-section[data-section=case_platform]", timeout=WAIT_MS)
    token = page.locator("section[data-section=case_platform] li[data-key=token] code")
    assert token.inner_text() == "***"
    nav = page.locator("header.top nav a")
    tops = {round(nav.nth(n).bounding_box()["y"]) for n in range(nav.count())}
    assert nav.count() == 12 and len(tops) == 1, tops  # the admin's longer menu: one line
    page.screenshot(path=shots / "06-admin-config.png", full_page=True)
    page.context.close()
