"""The audit log over real loopback HTTP on a real store: every write through the API is
recorded with who, role, what, before/after and why; no password or token reaches the
store; the store itself refuses to change or drop an entry; the list filters and pages;
``citygw users`` makes the first admin and is audited too."""

from __future__ import annotations

import io
import re
import sqlite3
import time

import pytest
from api_principals import ADMIN, PASSWORD, Deployments, add_user

from gateway import audit, store
from gateway.cli import main as cli
from gateway.principals import Principal

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
ANA = ("ana", "operator", "session")


@pytest.fixture
def deployments(tmp_path):
    made = Deployments(tmp_path)
    yield made
    made.close()


def entries(served, **params) -> list[dict]:
    answer = served.http.get("/api/v1/audit", headers=ADMIN, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["entries"]


def who_what(entry: dict) -> tuple:
    return (entry["actor"], entry["role"], entry["kind"], entry["action"], entry["target"],
            entry["reason"])  # fmt: skip


def test_every_operations_write_is_audited_with_before_after_and_reason(deployments):
    served = deployments.serve()
    add_user(served, "ana", "operator")
    ana = deployments.browser(served)
    assert ana.sign_in("ana").status_code == 200
    silence = {"matchers": {"device": "BIN-001"}, "author": "ana", "reason": "pump works",
               "duration_s": 3600}  # fmt: skip
    made = ana.request("POST", "/api/v1/silences", json=silence).json()
    extend = {"author": "ana", "reason": "longer", "duration_s": 7200}
    extended = ana.request("PATCH", "/api/v1/silences/1", json=extend).json()
    removed = ana.request("DELETE", "/api/v1/silences/1",
                          params={"author": "ana", "reason": "done"}).json()  # fmt: skip
    change = {"changes": {"bin.fill_fire_pct": 85}, "author": "ana", "reason": "summer"}
    assert ana.request("PUT", "/api/v1/thresholds", json=change).json()["version"] == 2
    back = {"version": 1, "author": "ana", "reason": "too many cases"}
    assert ana.request("POST", "/api/v1/thresholds/rollback", json=back).status_code == 200
    now_ms = int(time.time() * 1000)
    run = {"since_ms": now_ms - 3_600_000, "until_ms": now_ms, "warm_up_s": 0,
           "changes": {"bin.fill_fire_pct": 80}, "reason": "preview"}  # fmt: skip
    job = ana.request("POST", "/api/v1/backtests", json=run).json()["id"]
    requeue = ana.request("POST", "/api/v1/outbox/requeue", params={"reason": "token fixed"})
    assert requeue.json() == {"requeued": 0}
    assert ana.request("DELETE", "/api/v1/session").status_code == 204

    found = entries(served)
    assert [who_what(e) for e in found] == [
        (*ANA, "session.sign_out", "user:ana", ""),
        (*ANA, "outbox.requeue", "outbox", "token fixed"),
        (*ANA, "backtest.run", f"backtest:{job}", "preview"),
        (*ANA, "thresholds.rollback", "thresholds:v3", "too many cases"),
        (*ANA, "thresholds.set", "thresholds:v2", "summer"),
        (*ANA, "silence.remove", "silence:1", "done"),
        (*ANA, "silence.extend", "silence:1", "longer"),
        (*ANA, "silence.create", "silence:1", "pump works"),
        (*ANA, "session.sign_in", "user:ana", ""),
    ]
    assert [e["id"] for e in found] == list(range(9, 0, -1))
    assert all(ISO_UTC.fullmatch(e["ts"]) for e in found)
    by_action = {e["action"]: e for e in found}
    assert (by_action["thresholds.set"]["before"], by_action["thresholds.set"]["after"]) == (
        {"kinds.bin.fill_fire_pct": 90.0}, {"kinds.bin.fill_fire_pct": 85.0})  # fmt: skip
    assert by_action["thresholds.rollback"]["after"] == {"kinds.bin.fill_fire_pct": 90.0}

    def state(silence: dict) -> dict:
        return {k: silence[k] for k in ("status", "matchers", "starts_ms", "ends_ms", "removed_ms")}

    assert by_action["silence.create"]["before"] is None
    assert by_action["silence.create"]["after"] == state(made)
    assert by_action["silence.extend"]["before"] == state(made)
    assert by_action["silence.extend"]["after"] == state(extended)
    assert by_action["silence.remove"]["after"] == state(removed)
    assert removed["status"] == "expired" and removed["removed_ms"] is not None
    assert by_action["backtest.run"]["after"] == {
        "since_ms": run["since_ms"], "until_ms": now_ms, "changes": {"bin.fill_fire_pct": 80},
        "devices": 0, "grids": 0, "warm_up_s": 0.0,
    }  # fmt: skip
    assert by_action["outbox.requeue"]["after"] == {"requeued": 0}
    assert by_action["session.sign_in"]["after"] == {"address": "127.0.0.1"}


def test_refused_writes_are_not_audited(deployments):
    served = deployments.serve()
    add_user(served, "vic", "viewer")
    vic = deployments.browser(served)
    vic.sign_in("vic")
    before = len(entries(served))
    assert vic.request("POST", "/api/v1/outbox/requeue").status_code == 403
    bad = {"changes": {"bin.fill_fire_pct": "hot"}, "author": "a", "reason": "r"}
    assert served.http.put("/api/v1/thresholds", headers=ADMIN, json=bad).status_code == 400
    assert served.http.delete("/api/v1/silences/7", headers=ADMIN,
                              params={"author": "a"}).status_code == 404  # fmt: skip
    assert len(entries(served)) == before


def test_user_token_and_sign_in_writes_are_audited_and_no_secret_is_stored(deployments):
    served = deployments.serve()
    new_password = "another long password"
    made = served.http.post("/api/v1/users", headers=ADMIN,
                            json={"name": "ana", "role": "viewer", "password": PASSWORD,
                                  "reason": "new hire"})  # fmt: skip
    assert made.status_code == 201
    served.http.put("/api/v1/users/ana/role", headers=ADMIN, json={"role": "operator"})
    served.http.put("/api/v1/users/ana/role", headers=ADMIN, json={"role": "operator"})  # same
    browser = deployments.browser(served)
    assert browser.sign_in("ana", "not it at all").status_code == 401
    assert browser.sign_in("ana").status_code == 200
    served.http.put("/api/v1/users/ana/password", headers=ADMIN,
                    json={"password": new_password, "reason": "rotation"})  # fmt: skip
    served.http.put("/api/v1/users/ana/disabled", headers=ADMIN,
                    json={"disabled": True, "reason": "left"})  # fmt: skip
    token = served.http.post("/api/v1/tokens", headers=ADMIN,
                             json={"name": "grafana", "role": "viewer"}).json()  # fmt: skip
    served.http.delete("/api/v1/tokens/1", headers=ADMIN, params={"reason": "leaked"})

    found = entries(served)
    root = ("api-token", "admin", "api_token")
    assert [who_what(e) for e in found] == [
        (*root, "token.revoke", "token:1", "leaked"),
        (*root, "token.create", "token:1", ""),
        (*root, "user.disable", "user:ana", "left"),
        (*root, "user.password", "user:ana", "rotation"),
        (*ANA, "session.sign_in", "user:ana", ""),
        ("anonymous", "none", "none", "session.sign_in_failed", "user:ana", ""),
        (*root, "user.role", "user:ana", ""),
        (*root, "user.create", "user:ana", "new hire"),
    ]
    by_action = {e["action"]: e for e in found}
    assert (by_action["user.role"]["before"], by_action["user.role"]["after"]) == (
        {"role": "viewer"}, {"role": "operator"})  # fmt: skip
    assert by_action["user.password"]["after"] == {"sessions_ended": 1}
    assert by_action["user.disable"]["after"] == {"disabled": True, "sessions_ended": 0}
    assert by_action["token.revoke"]["before"]["revoked"] is False
    assert by_action["token.revoke"]["after"]["revoked"] is True

    folder = served.gateway.config.store.path.parent
    stored = b"".join(path.read_bytes() for path in folder.glob("gateway.db*"))
    for secret in (PASSWORD, new_password, "not it at all", token["token"]):
        assert secret.encode() not in stored, secret


def test_the_store_refuses_to_change_or_drop_an_audit_entry(deployments):
    served = deployments.serve()
    served.http.post("/api/v1/outbox/requeue", headers=ADMIN)
    path = served.gateway.config.store.path
    with sqlite3.connect(path) as conn:  # any client of the file, not only the gateway
        for statement in ("UPDATE audit SET actor = 'someone else'", "DELETE FROM audit"):
            with pytest.raises(sqlite3.IntegrityError, match="the audit log is append-only"):
                conn.execute(statement)
    assert [e["actor"] for e in entries(served)] == ["api-token"]


def test_the_audit_list_filters_and_pages(deployments):
    served = deployments.serve()
    conn = served.gateway.conn
    ops = Principal("ops", "operator", "session")
    script = Principal("nightly", "admin", "client_token")
    base_ms = 1_700_000_000_000
    for n in range(12):
        who = ops if n % 2 else script
        action = "silence.create" if n % 3 else "thresholds.set"
        entry = (who, action, f"silence:{n % 4}", None, {"n": n}, "", base_ms + n * 1000)
        store.in_transaction(conn, lambda entry=entry: audit.insert(conn, *entry))

    def ns(**params) -> list[int]:
        return [e["after"]["n"] for e in entries(served, **params)]

    assert ns(actor="ops") == [11, 9, 7, 5, 3, 1]
    assert ns(action="silence") == [11, 10, 8, 7, 5, 4, 2, 1]  # the group
    assert ns(action="silence.create", actor="nightly") == [10, 8, 4, 2]
    assert ns(action="silenc") == []  # a group is a whole word before the dot
    assert ns(target="silence:1") == [9, 5, 1]
    assert ns(since=str(base_ms + 9000)) == [11, 10, 9]
    assert ns(until="2023-11-14T22:13:22Z") == [2, 1, 0]  # base_ms is 22:13:20Z
    pages, cursor = [], None
    while True:
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        body = served.http.get("/api/v1/audit", headers=ADMIN, params=params).json()
        pages.append([e["after"]["n"] for e in body["entries"]])
        assert body["count"] == len(body["entries"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == [[11, 10, 9, 8, 7], [6, 5, 4, 3, 2], [1, 0]]
    zoneless = "2024-01-01T00:00:00"
    for params, detail in [
        ({"cursor": "x1"}, "cursor: not one this API handed out"),
        ({"since": "yesterday"}, "since: expected epoch milliseconds or ISO 8601, got 'yesterday'"),
        ({"until": zoneless}, f"until: {zoneless!r} has no zone; add Z or an offset"),
    ]:
        answer = served.http.get("/api/v1/audit", headers=ADMIN, params=params)
        assert (answer.status_code, answer.json()) == (400, {"detail": detail})


def test_citygw_users_adds_the_first_admin_who_signs_in(deployments, monkeypatch, capsys):
    served = deployments.serve()
    config = str(served.gateway.config.store.path.parent / "gateway.yaml")

    def users(*args: str, stdin: str) -> int:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        return cli(["users", *args, "-c", config, "--password-stdin"])

    assert users("add", "root", "--role", "admin", "--reason", "first", stdin=PASSWORD + "\n") == 0
    assert capsys.readouterr().out == "user root (admin) added\n"
    assert users("add", "root", "--role", "viewer", stdin=PASSWORD + "\n") == 1
    assert users("add", "short", "--role", "viewer", stdin="hunter2\n") == 1
    assert capsys.readouterr().err == (
        "citygw: a user named 'root' exists already\ncitygw: password: 12 to 1024 characters\n"
    )
    browser = deployments.browser(served)
    assert browser.sign_in("root").json()["role"] == "admin"
    assert users("password", "root", stdin="a brand new password\n") == 0
    assert capsys.readouterr().out == "password of root set; 1 session(s) ended\n"
    assert browser.request("GET", "/api/v1/users").status_code == 401
    assert users("password", "nobody", stdin="a brand new password\n") == 1

    (created, changed) = reversed(entries(served, action="user"))
    assert (created["kind"], created["role"], created["action"], created["reason"]) == (
        "cli", "admin", "user.create", "first")  # fmt: skip
    assert created["actor"].startswith("cli:") and created["after"]["role"] == "admin"
    assert (changed["action"], changed["after"]) == ("user.password", {"sessions_ended": 1})
