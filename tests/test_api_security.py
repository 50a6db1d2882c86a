"""The gateway's API, served by uvicorn on loopback, as an outsider meets it: credentials on
every route but /healthz and signing in, no docs, bounded requests, evidence by name only
(a real symlink and a hard link pointing out of the folder), and pages that return every row
exactly once."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_server import ServedApi, gateway_for_api

from case_bridge import outbox
from domain import Alert, AlertState, CaseCommand, CommandKind, Location, Priority
from gateway import store
from gateway.api import create_api

TOKEN = "0123456789abcdef-api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64 + b"\xff\xd9"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """serve(**api settings) -> ServedApi; the token is in a file beside the config."""
    (tmp_path / "api-token").write_text(TOKEN + "\n")
    opened: list[ServedApi] = []

    def start(**api) -> ServedApi:
        served = ServedApi(gateway_for_api(tmp_path, {"token_file": "api-token", **api}))
        opened.append(served)
        return served

    yield start
    for served in opened:
        served.close()
        served.gateway.conn.close()


@pytest.fixture
def api(serve) -> ServedApi:
    return serve()


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "MH-001", path)


# -- the token ------------------------------------------------------------------------------


def routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, included routers' too (the OpenAPI
    document lists them all, whether or not the docs are served)."""
    return [(method.upper(), path) for path, operations in app.openapi()["paths"].items()
            for method in operations]  # fmt: skip


def test_every_route_but_health_and_sign_in_needs_credentials(api):
    served = routes(api.app)
    assert len(served) >= 30  # the enumeration below really covers the API
    assert ("PUT", "/api/v1/users/{name}/role") in served
    for method, path in served:
        response = api.http.request(method, concrete(path))
        if path == "/healthz":
            assert response.status_code == 200
            continue
        if path == "/readyz":  # public for probes; this gateway is not running, so not ready
            assert (response.status_code, response.json()["status"]) == (503, "not_ready")
            continue
        if path == "/evidence/{name}":  # signed links: no token, but a signature
            assert response.status_code == 403
            continue
        if (method, path) == ("POST", "/api/v1/session"):  # signing in: JSON, no token
            assert (response.status_code, response.json()) == (
                415, {"detail": "send the credentials as application/json"})  # fmt: skip
            continue
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == 'Bearer realm="citygw"'
        assert response.json() == {"detail": "a bearer token is required"}
    assert api.http.get("/no/such/route").status_code == 401  # no map of routes either
    page = api.http.get("/console/")  # the console's pages are public; their data is not
    assert (page.status_code, page.headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert api.http.get("/console").status_code == 308
    assert api.http.get("/console/no-such-file.js").status_code == 404


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer", f"Basic {TOKEN}", TOKEN],
)
def test_a_wrong_token_is_refused(api, authorization):
    response = api.http.get("/api/v1/dead-letters", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer realm="citygw"')


def test_the_right_token_opens_the_api(api):
    assert api.http.get("/api/v1/dead-letters", headers=AUTH).json() == {
        "dead_letters": [],
        "count": 0,
        "next_cursor": None,
    }
    lower_scheme = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
    assert api.http.get("/api/v1/outbox", headers=lower_scheme).status_code == 200


def test_metrics_need_the_token_unless_configured_public(serve):
    """Only the gate is judged here: rendering needs a running gateway's parts, which the
    end-to-end tests scrape (tests/test_e2e_device_health.py)."""
    closed = serve()
    assert closed.http.get("/metrics").status_code == 401
    assert closed.http.get("/metrics", headers=AUTH).status_code != 401
    public = serve(metrics_public=True)
    assert public.http.get("/api/v1/outbox").status_code == 401
    assert public.http.get("/metrics").status_code != 401


def test_docs_are_off_by_default_and_public_when_on(serve):
    off = serve()
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert off.http.get(path).status_code == 401
        assert off.http.get(path, headers=AUTH).status_code == 404
    on = serve(docs=True)
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert on.http.get(path).status_code == 200
    assert on.http.get("/api/v1/outbox").status_code == 401


def test_without_a_token_only_healthz_is_served(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("CITYGW_API_TOKEN", raising=False)
    gw = gateway_for_api(tmp_path, {})
    served = ServedApi(gw)
    try:
        assert served.http.get("/healthz").status_code == 200
        for headers in ({}, AUTH, {"Authorization": "Bearer"}):
            response = served.http.get("/api/v1/dead-letters", headers=headers)
            assert response.status_code == 401
            assert "no API token configured" in response.json()["detail"]
        assert served.http.get("/metrics").status_code == 401
    finally:
        served.close()
        gw.conn.close()
    assert "API: no token in api.token_file or $CITYGW_API_TOKEN" in caplog.text


def test_the_token_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CITY_API_SECRET", TOKEN)
    gw = gateway_for_api(tmp_path, {"token_env": "CITY_API_SECRET"})
    served = ServedApi(gw)
    try:
        assert served.http.get("/api/v1/outbox").status_code == 401
        assert served.http.get("/api/v1/outbox", headers=AUTH).status_code == 200
    finally:
        served.close()
        gw.conn.close()


def test_binding_beyond_loopback_is_warned_about(tmp_path, caplog):
    (tmp_path / "api-token").write_text(TOKEN)
    gw = gateway_for_api(tmp_path, {"token_file": "api-token", "host": "0.0.0.0"})
    try:
        create_api(gw)
    finally:
        gw.conn.close()
    assert "API: listening on 0.0.0.0, not loopback" in caplog.text


# -- request bounds ---------------------------------------------------------------------------


def test_oversized_bodies_and_urls_are_refused_before_any_handler(api):
    big = api.http.post("/api/v1/outbox/requeue", headers=AUTH, content=b"x" * (64 * 1024 + 1))
    assert (big.status_code, big.json()) == (413, {"detail": "body larger than 65536 bytes"})
    fits = api.http.post("/api/v1/outbox/requeue", headers=AUTH, content=b"x" * 1024)
    assert fits.status_code == 200

    def chunks() -> Iterator[bytes]:  # no Content-Length: its size is unknown up front
        yield b"y"

    streamed = api.http.post("/api/v1/outbox/requeue", headers=AUTH, content=chunks())
    assert (streamed.status_code, streamed.json()) == (
        411,
        {"detail": "send the body with a Content-Length"},
    )
    long_query = api.http.get("/api/v1/dead-letters", headers=AUTH, params={"reason": "r" * 5000})
    assert long_query.status_code == 414
    long_path = api.http.get("/api/v1/devices/" + "D" * 5000 + "/readings", headers=AUTH)
    assert long_path.status_code == 414
    unauthenticated = api.http.get("/api/v1/dead-letters", params={"reason": "r" * 5000})
    assert unauthenticated.status_code == 414  # bounds first: nothing is parsed for a stranger


def test_a_lying_content_length_is_refused(api):
    with socket.create_connection(("127.0.0.1", api.port), 5) as sock:
        sock.sendall(
            b"POST /api/v1/outbox/requeue HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 99999999999999999999999\r\n\r\n"
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:60]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"since": "9" * 5000}, "since: 5000 digits is out of range"),
        ({"until": "1" * 5000}, "until: 5000 digits is out of range"),
        ({"since": "0", "until": "9" * 16}, "until: 16 digits is out of range"),
        ({"since": "0", "until": "9" * 15}, "until: '999999999999999' is out of range"),
    ],
)
def test_huge_instants_answer_400(serve, params, detail):
    api = serve(max_url_bytes=65_536)
    response = api.http.get("/api/v1/devices/MH-001/readings", headers=AUTH, params=params)
    assert (response.status_code, response.json()["detail"]) == (400, detail)


def test_a_huge_limit_is_a_validation_error_not_a_crash(serve):
    api = serve(max_url_bytes=65_536)
    response = api.http.get("/api/v1/outbox", headers=AUTH, params={"limit": "9" * 5000})
    assert response.status_code == 422


# -- evidence ---------------------------------------------------------------------------------


def test_evidence_is_served_by_name_from_its_folder_only(api, tmp_path):
    folder = api.gateway.evidence_dir
    folder.mkdir(parents=True)
    (folder / "CAM-A_z1_dumping_1700000000000.jpg").write_bytes(JPEG)
    secret = tmp_path / "outside_1700000000000.jpg"
    secret.write_bytes(b"\xff\xd8 not for the API")
    (folder / "CAM-A_z1_dumping_1700000000001.jpg").symlink_to(secret)
    os.link(secret, folder / "CAM-A_z1_dumping_1700000000002.jpg")
    (folder / "sub_1.jpg").mkdir()
    os.mkfifo(folder / "CAM-A_z1_dumping_1700000000003.jpg")

    def get(name: str) -> httpx.Response:
        return api.http.get(f"/api/v1/evidence/{name}", headers=AUTH)

    good = get("CAM-A_z1_dumping_1700000000000.jpg")
    assert (good.status_code, good.content, good.headers["content-type"]) == (
        200,
        JPEG,
        "image/jpeg",
    )
    for name in (
        "CAM-A_z1_dumping_1700000000001.jpg",  # symlink to a file outside
        "CAM-A_z1_dumping_1700000000002.jpg",  # hard link to a file outside
        "sub_1.jpg",  # a folder
        "CAM-A_z1_dumping_1700000000003.jpg",  # a FIFO: must not hang the server
        "..%2Foutside_1700000000000.jpg",
        "%2E%2E%2Foutside_1700000000000.jpg",
        ".hidden_1.jpg",
        "gateway.db",
        "CAM-A_z1_dumping_1700000000009.jpg",  # no such file
    ):
        response = get(name)
        assert response.status_code == 404, name
        assert b"not for the API" not in response.content


# -- paging -----------------------------------------------------------------------------------


def alert(n: int) -> Alert:
    loc = Location(26.08, 119.30, "五四路", "350102001001001")
    return Alert(f"BIN-{n:03d}/full", f"BIN-{n:03d}", "full", AlertState.FIRING, "06010",
                 Priority.NORMAL, loc, 1_700_000_000_000 + n)  # fmt: skip


def page_through(http: httpx.Client, path: str, key: str, limit: int, **params) -> list[list]:
    pages, cursor = [], None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        body = http.get(path, headers=AUTH, params=query).json()
        pages.append(body[key])
        assert body["count"] == len(body[key])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100


def test_every_list_pages_each_row_exactly_once(api):
    conn = api.gateway.conn
    batch = store.Batch()
    for n in range(23):
        reason = "bad_json" if n % 3 else "unknown_device"
        batch.reject(1000 + n, f"citygw/v1/D{n}/telemetry", f"D{n}", reason, "x", b"{")
    for n in range(17):
        batch.states.append(("incident", f"INC-{n:04d}", {"id": f"INC-{n:04d}",
                             "status": "open" if n % 2 else "closed"}))  # fmt: skip
        command = CaseCommand(f"cmd-{n}", f"INC-{n:04d}", CommandKind.OPEN, alert(n),
                              Priority.NORMAL)  # fmt: skip
        batch.also.append(lambda c, command=command: outbox.enqueue(c, command, 1000))
    store.commit(conn, batch)

    letters = page_through(api.http, "/api/v1/dead-letters", "dead_letters", 5)
    assert [len(p) for p in letters] == [5, 5, 5, 5, 3]
    ids = [row["id"] for page in letters for row in page]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 23
    unknown = page_through(
        api.http, "/api/v1/dead-letters", "dead_letters", 3, reason="unknown_device"
    )
    assert [len(p) for p in unknown] == [3, 3, 2]
    assert {r["reason"] for p in unknown for r in p} == {"unknown_device"}

    commands = page_through(api.http, "/api/v1/outbox", "commands", 4)
    seqs = [row["seq"] for page in commands for row in page]
    assert seqs == list(range(17, 0, -1))

    incidents = page_through(api.http, "/api/v1/incidents", "incidents", 4)
    assert [row["id"] for p in incidents for row in p] == [f"INC-{n:04d}" for n in range(17)]
    closed = page_through(api.http, "/api/v1/incidents", "incidents", 4, status="closed")
    assert [row["id"] for p in closed for row in p] == [f"INC-{n:04d}" for n in range(0, 17, 2)]
    assert [len(p) for p in closed] == [4, 4, 1]


def test_a_row_written_while_paging_is_neither_skipped_nor_repeated(api):
    conn = api.gateway.conn
    batch = store.Batch()
    for n in range(6):
        batch.reject(n, "t", f"D{n}", "bad_json", "x", b"{")
    store.commit(conn, batch)
    first = api.http.get("/api/v1/dead-letters", headers=AUTH, params={"limit": 4}).json()
    later = store.Batch()
    later.reject(99, "t", "NEW", "bad_json", "x", b"{")
    store.commit(conn, later)
    second = api.http.get(
        "/api/v1/dead-letters", headers=AUTH, params={"limit": 4, "cursor": first["next_cursor"]}
    ).json()
    assert [r["id"] for r in first["dead_letters"] + second["dead_letters"]] == [6, 5, 4, 3, 2, 1]
    assert second["next_cursor"] is None


def test_readings_page_through_equal_timestamps_and_buckets(api):
    conn = api.gateway.conn
    batch = store.Batch()
    stamps = [1000, 1000, 1000, 1000, 1000, 2000, 3000, 3000, 4000, 5000, 5000]
    for seq, ts in enumerate(stamps):
        batch.readings.append(("MH-001", ts, seq, f'{{"tilt_deg": {seq}}}', 0))
    store.commit(conn, batch)
    rows = [
        ("MH-001", start, ms, "tilt_deg", 0, 1, 1.0, 1.0, 1.0, start, 1.0)
        for start, ms in [
            (0, 2000),
            (0, 1000),
            (1000, 1000),
            (2000, 1000),
            (2000, 2000),
            (3000, 1000),
        ]
    ]
    conn.executemany(
        "INSERT INTO readings_downsampled VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
    )
    for limit in (1, 2, 3, 4, 20):
        readings, buckets, cursor = [], [], None
        for _ in range(30):
            params = {"since": 0, "until": 6000, "limit": limit}
            body = api.http.get(
                "/api/v1/devices/MH-001/readings",
                headers=AUTH,
                params={**params, **({"cursor": cursor} if cursor else {})},
            ).json()
            assert len(body["readings"]) <= limit and len(body["downsampled"]) <= limit
            readings += [r["seq"] for r in body["readings"]]
            buckets += [(b["start"], b["bucket_s"]) for b in body["downsampled"]]
            cursor = body["next_cursor"]
            assert body["truncated"] is (cursor is not None)
            if cursor is None:
                break
        assert readings == list(range(len(stamps))), limit
        assert buckets == [(0, 1), (0, 2), (1000, 1), (2000, 1), (2000, 2), (3000, 1)], limit


@pytest.mark.parametrize(
    ("path", "cursor"),
    [
        ("/api/v1/dead-letters", "abc"),
        ("/api/v1/outbox", "-1"),
        ("/api/v1/outbox", "9" * 40),
        ("/api/v1/devices/MH-001/readings", "12"),
        ("/api/v1/devices/MH-001/readings", "-:-"),
    ],
)
def test_a_forged_cursor_answers_400(api, path, cursor):
    response = api.http.get(path, headers=AUTH, params={"cursor": cursor})
    assert response.status_code == 400
    assert response.json() == {"detail": "cursor: not one this API handed out"}
