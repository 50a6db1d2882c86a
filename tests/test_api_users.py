"""Who may do what, over real loopback HTTP on a real store: signing in and out, the session
cookie's flags, CSRF, the failure limits, each role allowed or refused by method and path,
client tokens, and admins managing users."""

from __future__ import annotations

import hashlib
import json
import re
import time

import pytest
from api_principals import ADMIN, PASSWORD, Deployments, add_user, rows

from gateway import sign_in_limits
from gateway.sessions import COOKIE
from gateway.sign_in_limits import WINDOW_MS

SILENCE = {"matchers": {"device": "BIN-001"}, "author": "ops", "reason": "maintenance",
           "duration_s": 3600}  # fmt: skip
THRESHOLD = {"changes": {"bin.fill_fire_pct": 85}, "author": "ops", "reason": "summer"}
WRONG = {"detail": "wrong user name or password"}


@pytest.fixture
def deployments(tmp_path):
    made = Deployments(tmp_path)
    yield made
    made.close()


@pytest.fixture
def served(deployments):
    api = deployments.serve()
    api.browser = lambda: deployments.browser(api)
    return api


# -- signing in and out -----------------------------------------------------------------------


def test_sign_in_sets_a_strict_http_only_secure_cookie_and_answers_the_csrf_token(served):
    add_user(served, "ana", "operator")
    browser = served.browser()
    response = browser.sign_in("ana")
    assert response.status_code == 200
    body = response.json()
    assert (body["user"], body["role"]) == ("ana", "operator")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", body["csrf"])
    cookie = response.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert attributes == {COOKIE, "httponly", "max-age", "path", "samesite", "secure"}
    assert "Max-Age=28800" in cookie and "Path=/" in cookie
    assert "samesite=strict" in cookie.lower()

    again = browser.request("GET", "/api/v1/session")
    assert (again.status_code, again.json()) == (200, body)
    (stored,) = served.gateway.conn.execute("SELECT id_sha256, csrf FROM sessions").fetchall()
    assert stored == (hashlib.sha256(browser.session_id.encode()).hexdigest(), body["csrf"])


def test_the_cookie_goes_over_plain_http_only_when_configured(deployments):
    api = deployments.serve(cookie_secure=False, session_lifetime_s=600)
    add_user(api, "ana", "viewer")
    cookie = deployments.browser(api).sign_in("ana").headers["set-cookie"]
    assert "secure" not in cookie.lower() and "Max-Age=600" in cookie


def test_sign_in_takes_json_only_so_no_other_site_can_post_a_form(served):
    add_user(served, "ana", "operator")
    form = {"username": "ana", "password": PASSWORD}
    response = served.http.post("/api/v1/session", data=form)
    assert (response.status_code, response.json()) == (
        415, {"detail": "send the credentials as application/json"})  # fmt: skip
    text_plain = served.http.post("/api/v1/session", content=json.dumps(form),
                                  headers={"Content-Type": "text/plain"})  # fmt: skip
    assert text_plain.status_code == 415
    assert rows(served, "sessions") == 0
    utf8 = {"Content-Type": "application/json; charset=utf-8"}
    charset = served.http.post("/api/v1/session", content=json.dumps(form), headers=utf8)
    assert charset.status_code == 200


def test_a_wrong_password_an_unknown_name_and_a_disabled_user_get_the_same_401(served):
    add_user(served, "ana", "operator")
    add_user(served, "old", "operator")
    served.http.put("/api/v1/users/old/disabled", headers=ADMIN,
                    json={"disabled": True})  # fmt: skip
    browser = served.browser()
    for name, password in [("ana", PASSWORD + "x"), ("nobody", PASSWORD), ("old", PASSWORD),
                           ("a b", PASSWORD)]:  # fmt: skip
        response = browser.sign_in(name, password)
        assert (response.status_code, response.json()) == (401, WRONG), name
        assert "set-cookie" not in response.headers
    assert rows(served, "sessions") == 0


def test_failed_sign_ins_are_limited_per_name_then_per_address(deployments, monkeypatch):
    # Lower limits than the gateway's (5 per name, 20 per address): the same mechanism,
    # fewer argon2 checks for the test to wait on.
    monkeypatch.setattr(sign_in_limits, "PER_USER", 3)
    monkeypatch.setattr(sign_in_limits, "PER_ADDRESS", 6)
    served = deployments.serve()
    browser = deployments.browser(served)
    add_user(served, "ana", "operator")
    add_user(served, "bob", "operator")
    for _ in range(3):
        assert browser.sign_in("ana", "not the password").status_code == 401
    limited = browser.sign_in("ana")  # the right password: still refused, unchecked
    assert limited.status_code == 429
    assert 0 < int(limited.headers["retry-after"]) <= WINDOW_MS // 1000
    assert limited.json() == {"detail": "too many failed sign-ins: wait and retry"}
    assert browser.sign_in("bob").status_code == 200  # another name, same address

    for n in range(3):
        assert browser.sign_in(f"guess{n}", "not the password").status_code == 401
    assert browser.sign_in("bob").status_code == 429  # the address is spent now
    assert served.app.state.sign_ins.counts == {"wrong_credentials": 6, "rate_limited": 2,
                                                "ok": 1}  # fmt: skip


def test_sign_out_ends_the_session_in_the_store_and_clears_the_cookie(served):
    add_user(served, "ana", "viewer")
    browser = served.browser()
    browser.sign_in("ana")
    assert browser.request("DELETE", "/api/v1/session", csrf=None).status_code == 403
    out = browser.request("DELETE", "/api/v1/session")
    assert out.status_code == 204
    assert f'{COOKIE}=""' in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
    assert rows(served, "sessions") == 0
    after = browser.request("GET", "/api/v1/outbox")
    assert (after.status_code, after.json()) == (
        401,
        {"detail": "the session has ended: sign in again"},
    )


def test_an_expired_session_is_refused(served):
    add_user(served, "ana", "viewer")
    browser = served.browser()
    browser.sign_in("ana")
    assert browser.request("GET", "/api/v1/outbox").status_code == 200
    now_ms = int(time.time() * 1000)
    served.gateway.conn.execute("UPDATE sessions SET expires_ms = ?", (now_ms - 1,))
    assert browser.request("GET", "/api/v1/outbox").status_code == 401


def test_an_unsafe_request_with_the_cookie_needs_the_sessions_csrf_token(served):
    add_user(served, "ana", "operator")
    add_user(served, "bob", "operator")
    ana, bob = served.browser(), served.browser()
    ana.sign_in("ana")
    bob.sign_in("bob")
    audited = rows(served, "audit")
    refusal = {"detail": "X-CSRF-Token is missing or not this session's"}
    for csrf in (None, "wrong", bob.csrf):
        response = ana.request("POST", "/api/v1/outbox/requeue", csrf=csrf)
        assert (response.status_code, response.json()) == (403, refusal), csrf
    assert rows(served, "audit") == audited  # nothing was done
    assert served.app.state.api_refused == {"csrf": 3}
    assert ana.request("GET", "/api/v1/outbox", csrf=None).status_code == 200
    assert ana.request("POST", "/api/v1/outbox/requeue").json() == {"requeued": 0}
    assert rows(served, "audit") == audited + 1


def test_a_wrong_bearer_token_is_refused_even_with_a_good_cookie(served):
    add_user(served, "ana", "operator")
    browser = served.browser()
    browser.sign_in("ana")
    response = browser.request("GET", "/api/v1/outbox", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


# -- roles ----------------------------------------------------------------------------------


CASES = [  # method, path, body, least role, status when allowed
    ("GET", "/api/v1/outbox", None, "viewer", 200),
    ("GET", "/api/v1/audit", None, "viewer", 200),
    ("GET", "/api/v1/thresholds", None, "viewer", 200),
    ("POST", "/api/v1/outbox/requeue", None, "operator", 200),
    ("POST", "/api/v1/silences", SILENCE, "operator", 201),
    ("PUT", "/api/v1/thresholds", THRESHOLD, "operator", 200),
    ("GET", "/api/v1/users", None, "admin", 200),
    ("GET", "/api/v1/tokens", None, "admin", 200),
    ("POST", "/api/v1/tokens", {"role": "viewer"}, "admin", 201),
]
RANK = {"none": -1, "viewer": 0, "operator": 1, "admin": 2}


def test_each_role_is_allowed_or_refused_by_method_and_path(served):
    headers = {"none": {}, "api-token": ADMIN}
    for role in ("viewer", "operator", "admin"):
        made = served.http.post("/api/v1/tokens", headers=ADMIN,
                                json={"name": f"{role}-script", "role": role})  # fmt: skip
        assert made.status_code == 201
        headers[role] = {"Authorization": f"Bearer {made.json()['token']}"}
    for who, sent in headers.items():
        rank = RANK["admin" if who == "api-token" else who]
        for method, path, body, least, allowed in CASES:
            if body is not None and path == "/api/v1/tokens":
                body = {**body, "name": f"made-by-{who}"}
            response = served.http.request(method, path, headers=sent, json=body)
            if who == "none":
                assert response.status_code == 401, (who, method, path)
            elif rank < RANK[least]:
                assert (response.status_code, response.json()) == (403, {
                    "detail": f"{method} {path} needs the {least} role", "required_role": least,
                }), (who, method, path)  # fmt: skip
            else:
                assert response.status_code == allowed, (who, method, path, response.text)


def test_a_sessions_role_is_its_users_now(served):
    add_user(served, "ana", "operator")
    browser = served.browser()
    browser.sign_in("ana")
    assert browser.request("POST", "/api/v1/silences", json=SILENCE).status_code == 201
    demoted = served.http.put("/api/v1/users/ana/role", headers=ADMIN, json={"role": "viewer"})
    assert demoted.json()["role"] == "viewer"
    refused = browser.request("POST", "/api/v1/silences", json=SILENCE)
    assert (refused.status_code, refused.json()["required_role"]) == (403, "operator")
    assert browser.request("GET", "/api/v1/session").json()["role"] == "viewer"
    assert browser.request("GET", "/api/v1/users").status_code == 403


# -- client tokens --------------------------------------------------------------------------


def test_client_tokens_are_shown_once_kept_hashed_used_and_revoked(served):
    grafana = {"name": "grafana", "role": "viewer", "reason": "dashboards"}
    made = served.http.post("/api/v1/tokens", headers=ADMIN, json=grafana)
    assert made.status_code == 201
    shown = made.json()
    token = shown.pop("token")
    assert re.fullmatch(r"citygw_[A-Za-z0-9_-]{43}", token)
    assert shown == {"id": 1, "name": "grafana", "role": "viewer", "created_by": "api-token",
                     "created_ms": shown["created_ms"], "revoked": False,
                     "revoked_ms": None}  # fmt: skip
    listed = served.http.get("/api/v1/tokens", headers=ADMIN).json()
    assert listed == {"tokens": [shown], "count": 1}
    stored = served.gateway.conn.execute("SELECT token_sha256 FROM client_tokens").fetchone()[0]
    assert stored == hashlib.sha256(token.encode()).hexdigest()

    bearer = {"Authorization": f"Bearer {token}"}
    assert served.http.get("/api/v1/outbox", headers=bearer).status_code == 200
    assert served.http.post("/api/v1/outbox/requeue", headers=bearer).status_code == 403
    twin = served.http.post(
        "/api/v1/tokens", headers=ADMIN, json={"name": "grafana", "role": "admin"}
    )
    assert (twin.status_code, twin.json()) == (
        409,
        {"detail": "a live token named 'grafana' exists already"},
    )

    revoked = served.http.delete("/api/v1/tokens/1", headers=ADMIN, params={"reason": "leaked"})
    assert (revoked.status_code, revoked.json()["revoked"]) == (200, True)
    refused = served.http.get("/api/v1/outbox", headers=bearer)
    assert (refused.status_code, refused.json()) == (
        401,
        {"detail": "the bearer token is not valid"},
    )
    assert served.http.delete("/api/v1/tokens/1", headers=ADMIN).status_code == 200
    assert served.http.delete("/api/v1/tokens/9", headers=ADMIN).status_code == 404
    again = served.http.post(
        "/api/v1/tokens", headers=ADMIN, json={"name": "grafana", "role": "viewer"}
    )
    assert again.status_code == 201  # the revoked token's name is free again
    assert rows(served, "client_tokens") == 2


# -- users ----------------------------------------------------------------------------------


def test_admins_make_users_who_then_sign_in(served):
    body = {"name": "王工", "role": "operator", "password": PASSWORD}
    bad = served.http.post("/api/v1/users", headers=ADMIN, json=body)
    assert bad.status_code == 400 and bad.json()["detail"].startswith("name: ")
    short = served.http.post("/api/v1/users", headers=ADMIN,
                             json={**body, "name": "wang", "password": "hunter2"})  # fmt: skip
    assert (short.status_code, short.json()) == (
        400, {"detail": "password: String should have at least 12 characters"})  # fmt: skip
    assert rows(served, "users") == 0
    made = served.http.post("/api/v1/users", headers=ADMIN, json={**body, "name": "wang"})
    assert made.status_code == 201
    created_ms = made.json()["created_ms"]
    assert made.json() == {"name": "wang", "role": "operator", "created_ms": created_ms,
                           "changed_ms": created_ms, "disabled": False,
                           "disabled_ms": None}  # fmt: skip
    twice = served.http.post("/api/v1/users", headers=ADMIN, json={**body, "name": "wang"})
    assert (twice.status_code, twice.json()) == (
        409,
        {"detail": "a user named 'wang' exists already"},
    )
    assert served.browser().sign_in("wang").json()["role"] == "operator"
    listed = served.http.get("/api/v1/users", headers=ADMIN).json()
    assert [u["name"] for u in listed["users"]] == ["wang"] and listed["count"] == 1
    assert "password_hash" not in listed["users"][0]


def test_disabling_a_user_or_setting_its_password_ends_its_sessions(served):
    add_user(served, "ana", "operator")
    first, second = served.browser(), served.browser()
    first.sign_in("ana")
    second.sign_in("ana")
    assert rows(served, "sessions") == 2
    new_password = "a new and longer password"
    changed = served.http.put("/api/v1/users/ana/password", headers=ADMIN,
                              json={"password": new_password, "reason": "rotation"})  # fmt: skip
    assert changed.status_code == 200
    assert rows(served, "sessions") == 0
    assert first.request("GET", "/api/v1/outbox").status_code == 401
    assert first.sign_in("ana").status_code == 401
    assert first.sign_in("ana", new_password).status_code == 200

    off = served.http.put("/api/v1/users/ana/disabled", headers=ADMIN, json={"disabled": True})
    assert (off.status_code, off.json()["disabled"]) == (200, True)
    assert first.request("GET", "/api/v1/outbox").status_code == 401
    on = served.http.put("/api/v1/users/ana/disabled", headers=ADMIN, json={"disabled": False})
    assert on.json()["disabled"] is False
    assert first.sign_in("ana", new_password).status_code == 200
    missing = served.http.put("/api/v1/users/bob/role", headers=ADMIN, json={"role": "admin"})
    assert (missing.status_code, missing.json()) == (404, {"detail": "no user 'bob'"})


def test_the_last_enabled_admin_cannot_be_demoted_or_disabled(served):
    add_user(served, "root", "admin")
    browser = served.browser()
    browser.sign_in("root")
    for path, body in [("role", {"role": "operator"}), ("disabled", {"disabled": True})]:
        response = browser.request("PUT", f"/api/v1/users/root/{path}", json=body)
        assert (response.status_code, response.json()) == (409, {
            "detail": "'root' is the last enabled admin: make another admin first"})  # fmt: skip
    assert served.http.get("/api/v1/users", headers=ADMIN).json()["users"][0]["role"] == "admin"
    add_user(served, "second", "admin")
    assert (
        browser.request("PUT", "/api/v1/users/root/role", json={"role": "viewer"}).status_code
        == 200
    )


def test_without_a_machine_token_sessions_and_client_tokens_still_work(deployments, monkeypatch):
    monkeypatch.delenv("CITYGW_API_TOKEN", raising=False)
    served = deployments.serve(token_file=None)
    add_user(served, "root", "admin")
    browser = deployments.browser(served)
    browser.sign_in("root")
    made = browser.request("POST", "/api/v1/tokens", json={"name": "cron", "role": "operator"})
    bearer = {"Authorization": f"Bearer {made.json()['token']}"}
    assert served.http.post("/api/v1/outbox/requeue", headers=bearer).status_code == 200
    refused = served.http.get("/api/v1/outbox", headers=ADMIN)  # no machine token to match
    assert refused.status_code == 401
    assert refused.json() == {
        "detail": "this gateway has no API token configured: sign in, or use a client token"
    }
