"""The parked-commands page in a real browser (Debian's chromium): an operator settles a
parked unclear send by what the platform shows, with a typed reason.

The gateway's API on loopback (never started: no broker, no platform, so what the page
makes pending stays pending), with ``gateway/api_outbox.py``'s router mounted as the
gateway will mount it, and the outbox holding four parked commands: an unclear open with
its incident's evidence parked behind it, another unclear open, and a refused one. The
operator is refused without a reason, then finds the first case on the platform (its
evidence pends), says the second was not filed, and retries the third alone; the store,
the page and the audit log say so exactly. A viewer's buttons are disabled."""

from __future__ import annotations

import pytest
from api_principals import PASSWORD, TOKEN, add_user
from api_server import ServedApi
from served_app import write_gateway_config
from test_e2e_console import CHROMIUM, WAIT_MS, _go, _page, _sign_in
from test_outbox_dispatch import command, enqueue

from case_bridge import outbox
from domain import CommandKind
from gateway import audit
from gateway.api_outbox import outbox_router
from gateway.audit import AuditTrail
from gateway.config import load_config
from gateway.service import Gateway

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is missing (make test installs it)"
)
playwright = pytest.importorskip("playwright.sync_api")

UNCLEAR = "looking up an unclear send: no case under 'INC-a', but possible match C20261121-000007"
FOUND = "C20261121-000007"


def served_gateway(tmp_path) -> ServedApi:
    (tmp_path / "api-token").write_text(TOKEN + "\n")
    config = write_gateway_config(tmp_path, {"token_file": "api-token", "cookie_secure": False})
    gw = Gateway(load_config(config))
    served = ServedApi(gw)
    served.app.include_router(outbox_router(gw.conn, AuditTrail(gw.conn), gw.dispatcher.wake))
    return served


def park(conn, command_id: str, reason: str, unclear: bool) -> int:
    seq = conn.execute("SELECT seq FROM outbox WHERE command_id = ?", (command_id,)).fetchone()[0]
    outbox.mark_maybe_filed(conn, seq, unclear)
    outbox.park(conn, seq, reason)
    return seq


def states(conn) -> list[tuple]:
    query = "SELECT command_id, state, maybe_filed FROM outbox ORDER BY seq"
    return conn.execute(query).fetchall()


def test_an_operator_settles_parked_unclear_sends_with_a_reason(tmp_path) -> None:
    served = served_gateway(tmp_path)
    conn = served.gateway.conn
    try:
        enqueue(conn, command("INC-a", 1), command("INC-a", 2, CommandKind.ATTACH),
                command("INC-b", 3), command("INC-c", 4))  # fmt: skip
        park(conn, "INC-a/1", UNCLEAR, unclear=True)
        park(conn, "INC-a/2", outbox.NO_CASE, unclear=False)
        park(conn, "INC-b/3", "looking up an unclear send: HTTP 404", unclear=True)
        park(conn, "INC-c/4", "HTTP 422 on POST /api/v1/cases", unclear=False)
        add_user(served, "ops", "operator")
        add_user(served, "watch", "viewer")
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=str(CHROMIUM))
            try:
                errors: list[str] = []
                _operator(_page(browser, errors), served.url)
                _viewer(_page(browser, errors), served.url)
            finally:
                browser.close()
        assert errors == []
        assert states(conn) == [
            ("INC-a/1", "delivered", 0),
            ("INC-a/2", "pending", 0),
            ("INC-b/3", "pending", 0),
            ("INC-c/4", "pending", 0),
        ]
        assert outbox.case_for(conn, "INC-a") == FOUND
        entries = [(e["actor"], e["action"], e["after"], e["reason"])
                   for e in reversed(audit.page(conn, 10, action="outbox").rows)]  # fmt: skip
        assert entries == [
            ("ops", "outbox.resolve", {"state": "delivered", "case_id": FOUND}, "案件已在平台"),
            ("ops", "outbox.resolve", {"state": "pending", "maybe_filed": False}, "平台上没有"),
            ("ops", "outbox.requeue", {"state": "pending"}, "分类码已修正"),
        ]
    finally:
        served.close()
        conn.close()


def _operator(page, base: str) -> None:
    _sign_in(page, base, "ops", PASSWORD)
    first = "tr[data-command='INC-a/1']"
    _go(page, base, "outbox", f"{first} button.found")
    assert page.locator("span.badge.unclear").count() == 2  # INC-a/1 and INC-b/3
    assert page.locator("tr[data-command='INC-c/4'] button.found").count() == 0
    page.fill(f"{first} input[name=case_id]", FOUND)
    page.click(f"{first} button.found")  # no reason yet
    assert page.wait_for_selector(".message.error", timeout=WAIT_MS).inner_text() == (
        "请填写原因（记入审计日志）"
    )  # fmt: skip

    page.fill("input[name=reason]", "案件已在平台")
    page.click(f"{first} button.found")
    page.wait_for_selector(".message.ok:has-text('INC-a/1')", timeout=WAIT_MS)
    page.wait_for_selector(first, state="detached", timeout=WAIT_MS)
    page.fill("input[name=reason]", "平台上没有")
    page.click("tr[data-command='INC-b/3'] button.not-filed")
    page.wait_for_selector("tr[data-command='INC-b/3']", state="detached", timeout=WAIT_MS)
    page.fill("input[name=reason]", "分类码已修正")
    page.click("tr[data-command='INC-c/4'] button.requeue-one")
    page.wait_for_selector("tr[data-command='INC-c/4']", state="detached", timeout=WAIT_MS)
    # INC-a/2 waited for INC-a's case: it pends now, so nothing is left parked.
    page.wait_for_selector("tbody td.empty", timeout=WAIT_MS)


def _viewer(page, base: str) -> None:
    _sign_in(page, base, "watch", PASSWORD)
    _go(page, base, "outbox?state=pending", "tr[data-command='INC-a/2']")
    assert page.locator("button.requeue-one").count() == 0  # actions only for parked rows
    assert page.locator("button.requeue").is_disabled()
