"""The bundled case platform, tested as clients see it: a real server on loopback.

Each test starts ``python -m simulators.platform`` on a free port with its own SQLite file,
so counts and ids are exact and a restart test can reopen the same file.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_platform(db_path: Path, unavailable_for: float = 0.0) -> Iterator[httpx.Client]:
    """Run the platform as a subprocess and yield an authorised client for it."""
    port = _free_port()
    log = db_path.with_suffix(".log")
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simulators.platform",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--db",
                str(db_path),
                "--token",
                TOKEN,
                "--unavailable-for",
                str(unavailable_for),
            ],
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"platform exited with {proc.returncode}: {log.read_text()}")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"platform did not start: {log.read_text()}")
            time.sleep(0.05)
        with httpx.Client(base_url=base_url, headers=AUTH, timeout=5) as client:
            yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cases.db"


@pytest.fixture
def client(db_path: Path) -> Iterator[httpx.Client]:
    with running_platform(db_path) as c:
        yield c


def case_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "class_code": "06010",
        "class_name": "暴露垃圾",
        "part_code": "",
        "priority": "normal",
        "deadline": "2026-11-21T18:00:00+08:00",
        "location": {
            "lat": 31.2989,
            "lon": 120.5853,
            "address": "姑苏区人民路 100 号",
            "grid_code": "320508001001001",
        },
        "description": "路边暴露垃圾",
        "source": "video",
        "evidence": [
            {"source_id": "cam-7", "ts": 1_763_700_000_000, "label": "GarbageExposed"},
        ],
    }
    body.update(overrides)
    return body


def create(client: httpx.Client, key: str | None = None, **overrides: Any) -> dict[str, Any]:
    headers = {"Idempotency-Key": key} if key else {}
    response = client.post("/api/v1/cases", json=case_body(**overrides), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def move(client: httpx.Client, case_id: str, to: str, note: str = "") -> httpx.Response:
    return client.post(f"/api/v1/cases/{case_id}/transition", json={"to": to, "note": note})


def add_evidence(
    client: httpx.Client, case_id: str, body: dict[str, Any], key: str | None = None
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(f"/api/v1/cases/{case_id}/evidence", json=body, headers=headers)


def expected_id(case: dict[str, Any], serial: int) -> str:
    return f"C{case['created_at'][:10].replace('-', '')}-{serial:06d}"


def test_api_needs_the_bearer_token_but_healthz_does_not(client: httpx.Client) -> None:
    anonymous = client.get("/api/v1/cases", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert anonymous.json() == {"detail": "missing or invalid bearer token"}
    wrong = client.post("/api/v1/cases", json=case_body(), headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 401
    assert client.get("/healthz", headers={"Authorization": ""}).json() == {"status": "ok"}
    assert client.get("/api/v1/cases").json() == {"cases": [], "count": 0}


def test_create_returns_the_case_and_a_repeated_key_returns_it_again(
    client: httpx.Client,
) -> None:
    first = client.post("/api/v1/cases", json=case_body(), headers={"Idempotency-Key": "cmd-1"})
    assert first.status_code == 201
    case = first.json()
    assert case["id"] == expected_id(case, 1)
    assert re.fullmatch(r"C\d{8}-\d{6}", case["id"])
    assert case["status"] == "accepted"
    assert case["status_name"] == "受理"
    assert case["external_key"] == "cmd-1"
    assert case["deadline"] == "2026-11-21T18:00:00+08:00"
    assert case["location"] == case_body()["location"]
    assert case["evidence"] == case_body()["evidence"]
    assert case["created_at"] == case["updated_at"]
    assert case["created_at"].endswith("+00:00")
    assert case["history"] == [
        {"ts": case["created_at"], "action": "create", "from": None, "to": "accepted", "note": ""}
    ]

    again = client.post(
        "/api/v1/cases",
        json=case_body(class_code="09006", priority="critical"),
        headers={"Idempotency-Key": "cmd-1"},
    )
    assert again.status_code == 200
    assert again.json() == case
    listing = client.get("/api/v1/cases").json()
    assert listing["count"] == 1
    assert [c["id"] for c in listing["cases"]] == [case["id"]]

    own_key = create(client, key="cmd-2", external_key="egova-42")
    assert own_key["external_key"] == "egova-42"
    assert own_key["id"] == expected_id(own_key, 2)
    assert create(client)["external_key"] is None


def test_invalid_bodies_get_422_naming_the_field(client: httpx.Client) -> None:
    cases = [
        (case_body(class_code="6010"), "class_code: must be exactly 5 digits"),
        (case_body(part_code="12345"), 'part_code: must be "" or 16/17 digits'),
        (case_body(deadline="2026-11-21T18:00:00"), "deadline: must include a time zone"),
        (case_body(priority="high"), "priority: Input should be"),
        (case_body(location={"lat": 91, "lon": 0}), "location.lat: Input should be less"),
        (case_body(evidence=[{"source_id": "cam-7"}]), "evidence.0.ts: Field required"),
        ({k: v for k, v in case_body().items() if k != "deadline"}, "deadline: Field required"),
    ]
    for body, message in cases:
        response = client.post("/api/v1/cases", json=body)
        assert response.status_code == 422, body
        assert response.json()["detail"].startswith(message), response.json()
    assert client.get("/api/v1/cases").json()["count"] == 0


def test_concurrent_creates_with_one_key_make_one_case(client: httpx.Client) -> None:
    def post(_: int) -> httpx.Response:
        return client.post(
            "/api/v1/cases", json=case_body(), headers={"Idempotency-Key": "same-cmd"}
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, range(8)))
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert client.get("/api/v1/cases").json()["count"] == 1


def test_workflow_walks_to_closed_and_refuses_illegal_moves(client: httpx.Client) -> None:
    case_id = create(client)["id"]
    illegal = move(client, case_id, "closed")
    assert illegal.status_code == 409
    assert illegal.json() == {"detail": "illegal transition from accepted (受理) to closed (结案)"}

    steps = [
        ("registered", "registered", "立案"),
        ("派遣", "dispatched", "派遣"),
        ("handling", "handling", "处置"),
        ("核查", "verifying", "核查"),
        ("返工", "handling", "处置"),
        ("verifying", "verifying", "核查"),
        ("结案", "closed", "结案"),
    ]
    for to, status, name in steps:
        response = move(client, case_id, to, note=f"to {to}")
        assert response.status_code == 200, response.text
        assert (response.json()["status"], response.json()["status_name"]) == (status, name)

    case = client.get(f"/api/v1/cases/{case_id}").json()
    assert [(h["action"], h["from"], h["to"], h["note"]) for h in case["history"]] == [
        ("create", None, "accepted", ""),
        ("register", "accepted", "registered", "to registered"),
        ("dispatch", "registered", "dispatched", "to 派遣"),
        ("handle", "dispatched", "handling", "to handling"),
        ("verify", "handling", "verifying", "to 核查"),
        ("rework", "verifying", "handling", "to 返工"),
        ("verify", "handling", "verifying", "to verifying"),
        ("close", "verifying", "closed", "to 结案"),
    ]
    assert case["updated_at"] == case["history"][-1]["ts"]

    final = move(client, case_id, "void")
    assert final.status_code == 409
    assert final.json()["detail"] == "illegal transition from closed (结案) to void (作废)"
    unknown = move(client, case_id, "archived")
    assert unknown.status_code == 422
    assert unknown.json()["detail"].startswith("to: unknown status 'archived'")
    assert move(client, "C20000101-000009", "registered").status_code == 404
    assert client.get("/api/v1/cases/C20000101-000009").status_code == 404


def test_evidence_appends_and_escalates_but_never_lowers(client: httpx.Client) -> None:
    case = create(client, priority="normal", deadline="2026-11-22T12:00:00+08:00")
    item = {"source_id": "lid-3", "ts": 1_763_700_060_000, "state": "escalated", "rule_id": "r1",
            "priority": "critical", "values": {"tilt_deg": 31.5, "open": True}}  # fmt: skip
    raised = add_evidence(
        client,
        case["id"],
        {"evidence": [item], "priority": "critical", "deadline": "2026-11-22T01:00:00Z"},
    )
    assert raised.status_code == 200
    escalated = raised.json()
    assert escalated["priority"] == "critical"
    assert escalated["deadline"] == "2026-11-22T01:00:00Z"
    assert escalated["evidence"] == [*case["evidence"], item]
    assert [(h["action"], h["from"], h["to"]) for h in escalated["history"][1:]] == [
        ("evidence", "accepted", "accepted"),
        ("escalate", "normal", "critical"),
    ]

    lower = add_evidence(
        client,
        case["id"],
        {
            "evidence": [{"source_id": "lid-3", "ts": 1_763_700_120_000}],
            "priority": "urgent",
            "deadline": "2026-11-21T00:00:00Z",
        },
    ).json()
    assert lower["priority"] == "critical"
    assert lower["deadline"] == "2026-11-22T01:00:00Z"
    assert len(lower["evidence"]) == 3
    assert [h["action"] for h in lower["history"]] == [
        "create",
        "evidence",
        "escalate",
        "evidence",
    ]

    later = create(client, priority="low", deadline="2026-11-22T12:00:00+08:00")
    kept = add_evidence(
        client,
        later["id"],
        {"evidence": [item], "priority": "urgent", "deadline": "2026-11-23T00:00:00+08:00"},
    ).json()
    assert (kept["priority"], kept["deadline"]) == ("urgent", "2026-11-22T12:00:00+08:00")

    bad = add_evidence(client, case["id"], {"evidence": [{"source_id": 7, "ts": 1}]})
    assert bad.status_code == 422
    assert bad.json()["detail"].startswith("evidence.0.source_id:")


def test_evidence_idempotency_key_is_per_case(client: httpx.Client) -> None:
    first, second = create(client), create(client)
    body = {"evidence": [{"source_id": "bin-9", "ts": 1}], "priority": "urgent"}
    applied = add_evidence(client, first["id"], body, key="att-1")
    assert applied.status_code == 200
    replay = add_evidence(
        client, first["id"], {"evidence": [{"source_id": "x", "ts": 2}]}, key="att-1"
    )
    assert replay.status_code == 200
    assert replay.json() == applied.json()
    assert len(replay.json()["evidence"]) == 2

    elsewhere = add_evidence(client, second["id"], body, key="att-1").json()
    assert len(elsewhere["evidence"]) == 2
    assert elsewhere["priority"] == "urgent"


def test_evidence_for_closed_or_void_or_missing_case_is_refused(client: httpx.Client) -> None:
    case_id = create(client)["id"]
    assert move(client, case_id, "void").status_code == 200
    body = {"evidence": [{"source_id": "cam-7", "ts": 5}], "priority": "critical"}
    refused = add_evidence(client, case_id, body, key="late")
    assert refused.status_code == 409
    assert refused.json() == {"detail": "case is closed"}
    case = client.get(f"/api/v1/cases/{case_id}").json()
    assert (case["priority"], len(case["evidence"])) == ("normal", 1)
    missing = add_evidence(client, "C20000101-000001", body)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "case C20000101-000001 not found"}


def test_list_filters_by_status_class_code_and_since(client: httpx.Client) -> None:
    a = create(client, class_code="06010")
    b = create(client, class_code="09006")
    c = create(client, class_code="06010")
    b = move(client, b["id"], "registered").json()

    def ids(**params: str) -> list[str]:
        response = client.get("/api/v1/cases", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["count"] == len(body["cases"])
        return [case["id"] for case in body["cases"]]

    assert ids() == [a["id"], b["id"], c["id"]]
    assert ids(status="registered") == [b["id"]]
    assert ids(status="受理") == [a["id"], c["id"]]
    assert ids(class_code="06010") == [a["id"], c["id"]]
    assert ids(class_code="06010", status="registered") == []
    assert ids(since=b["updated_at"]) == [b["id"]]
    assert ids(since=c["created_at"]) == [b["id"], c["id"]]
    beijing = datetime.fromisoformat(c["created_at"]).astimezone(timezone(timedelta(hours=8)))
    assert ids(since=beijing.isoformat()) == [b["id"], c["id"]]
    after = datetime.fromisoformat(b["updated_at"]) + timedelta(microseconds=1)
    assert ids(since=after.isoformat()) == []
    bad = client.get("/api/v1/cases", params={"since": "yesterday"})
    assert bad.status_code == 422
    assert bad.json()["detail"] == "since: must be an ISO 8601 timestamp"
    assert client.get("/api/v1/cases", params={"status": "open"}).status_code == 422


def test_unavailable_for_answers_503_then_recovers(db_path: Path) -> None:
    with running_platform(db_path, unavailable_for=2.0) as client:
        down = client.get("/api/v1/cases", headers={"Authorization": ""})
        assert down.status_code == 503
        assert down.headers["Retry-After"] == "1"
        assert client.post("/api/v1/cases", json=case_body()).status_code == 503
        assert client.get("/healthz").json() == {"status": "ok"}
        started = time.monotonic()
        while (status := client.get("/api/v1/cases").status_code) == 503:
            assert time.monotonic() - started < 5
            time.sleep(0.1)
        assert status == 200
        assert client.get("/api/v1/cases", headers={"Authorization": ""}).status_code == 401
        assert create(client)["id"].endswith("-000001")


def test_restart_keeps_cases_history_and_idempotency_keys(db_path: Path) -> None:
    with running_platform(db_path) as client:
        case = create(client, key="cmd-1")
        add_evidence(client, case["id"], {"evidence": [{"source_id": "s", "ts": 1}]}, key="att-1")
        before = move(client, case["id"], "立案", note="checked").json()

    with running_platform(db_path) as client:
        assert client.get(f"/api/v1/cases/{case['id']}").json() == before
        replay = client.post(
            "/api/v1/cases", json=case_body(), headers={"Idempotency-Key": "cmd-1"}
        )
        assert replay.status_code == 200
        assert replay.json() == before
        again = add_evidence(
            client, case["id"], {"evidence": [{"source_id": "s", "ts": 2}]}, key="att-1"
        )
        assert again.status_code == 200
        assert again.json() == before
        assert create(client)["id"] == expected_id(case, 2)
        assert client.get("/api/v1/cases").json()["count"] == 2
