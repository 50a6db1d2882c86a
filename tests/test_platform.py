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
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    empty = client.get("/api/v1/cases").json()
    assert (empty["cases"], empty["count"], empty["next"]) == ([], 0, None)


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
    assert refused.json() == {"detail": "case is void (作废)", "case_status": "void"}
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


def test_list_pages_by_limit_and_after_and_says_where_to_list_from_next(
    client: httpx.Client,
) -> None:
    made = [create(client, class_code="06010" if n % 2 else "09006") for n in range(5)]
    ids = [case["id"] for case in made]
    before = datetime.now(UTC)

    def pages(**params: str) -> list[list[str]]:
        seen, after = [], None
        while True:
            query = {**params, "limit": "2"} | ({"after": after} if after else {})
            body = client.get("/api/v1/cases", params=query).json()
            assert body["count"] == len(body["cases"]) <= 2
            seen.append([case["id"] for case in body["cases"]])
            if (after := body["next"]) is None:
                return seen

    assert pages() == [ids[0:2], ids[2:4], ids[4:5]]
    assert pages(class_code="06010") == [[ids[1], ids[3]]]
    moved = move(client, ids[2], "registered").json()
    assert pages(since=moved["updated_at"]) == [[ids[2]]]

    listing = client.get("/api/v1/cases").json()
    assert [case["id"] for case in listing["cases"]] == ids
    next_since = datetime.fromisoformat(listing["next_since"])
    # Five seconds before the listing began: a write stamped just before it and committed
    # just after is listed next time.
    assert before - timedelta(seconds=6) < next_since <= before - timedelta(seconds=4)
    assert [c["id"] for c in client.get("/api/v1/cases", params={"since": listing["next_since"]})
            .json()["cases"]] == ids  # fmt: skip

    for params, message in [
        ({"limit": "0"}, "limit: Input should be greater than or equal to 1"),
        ({"limit": "501"}, "limit: Input should be less than or equal to 500"),
        ({"after": "C" * 65}, "after: String should have at most 64 characters"),
        ({"since": "2" * 5000}, "since: String should have at most 64 characters"),
        ({"sinec": "2026-01-01T00:00:00Z"}, "sinec: Extra inputs are not permitted"),
    ]:
        refused = client.get("/api/v1/cases", params=params)
        assert refused.status_code == 422, params
        assert refused.json()["detail"] == message


def big_evidence(n: int, source_id: str = "cam-7") -> list[dict[str, Any]]:
    """``n`` evidence items of close to the 4 KB an item may take as JSON."""
    return [{"source_id": source_id, "ts": i, "note": "x" * 3_900} for i in range(n)]


def test_a_page_stops_at_a_megabyte_of_cases(client: httpx.Client) -> None:
    ids = [create(client, evidence=big_evidence(20))["id"] for _ in range(15)]  # ~80 KB each
    pages, after = [], None
    while True:
        body = client.get("/api/v1/cases", params={"after": after} if after else {}).json()
        pages.append([case["id"] for case in body["cases"]])
        if (after := body["next"]) is None:
            break
    assert [len(page) for page in pages] == [13, 2]  # 13 x ~80 KB fit in 1 MiB, 14 do not
    assert [case_id for page in pages for case_id in page] == ids


def test_a_body_over_a_megabyte_is_refused_before_it_is_read(client: httpx.Client) -> None:
    huge = case_body(description="x" * (1024 * 1024))
    declared = client.post("/api/v1/cases", json=huge)
    assert declared.status_code == 413
    assert declared.json() == {"detail": "request body larger than 1048576 bytes"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"description": "'
        for _ in range(2048):
            yield b"y" * 1024
        yield b'"}'

    streamed = client.post(
        "/api/v1/cases", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    anonymous = client.post("/api/v1/cases", json=huge, headers={"Authorization": ""})
    assert anonymous.status_code == 401  # nothing is buffered for a client without the token
    assert client.get("/api/v1/cases").json()["count"] == 0
    assert create(client)["id"].endswith("-000001")


def test_fields_are_bounded(client: httpx.Client) -> None:
    deep: Any = 1
    for _ in range(7):
        deep = [deep]
    cases = [
        (case_body(description="x" * 2001), "description: String should have at most 2000"),
        (case_body(class_name="x" * 65), "class_name: String should have at most 64"),
        (case_body(external_key="k" * 129), "external_key: String should have at most 128"),
        (case_body(evidence=big_evidence(21)), "evidence: List should have at most 20 items"),
        (
            case_body(evidence=[{"source_id": "s", "ts": 1, "note": "x" * 4100}]),
            "evidence.0: larger than 4096 bytes as JSON",
        ),
        (
            case_body(evidence=[{"source_id": "s", "ts": 1, "deep": deep}]),
            "evidence.0: nested deeper than 6 levels",
        ),
        (
            case_body(evidence=[{"source_id": "s", "ts": 2**63}]),
            "evidence.0.ts: Input should be less than or equal to 9223372036854775807",
        ),
        (case_body(location={"lat": 0, "lon": 0, "address": "a" * 201}), "location.address:"),
    ]
    for body, message in cases:
        response = client.post("/api/v1/cases", json=body)
        assert response.status_code == 422, body
        assert response.json()["detail"].startswith(message), response.json()
    long_key = client.post(
        "/api/v1/cases", json=case_body(), headers={"Idempotency-Key": "k" * 129}
    )
    assert long_key.status_code == 422
    nested = client.post(
        "/api/v1/cases", content=b"[" * 100_000, headers={"Content-Type": "application/json"}
    )
    assert nested.status_code == 400
    assert nested.json() == {"detail": "There was an error parsing the body"}
    assert client.get("/api/v1/cases/" + "C" * 65).status_code == 422
    assert client.get("/api/v1/cases").json()["count"] == 0


def test_a_case_keeps_200_evidence_items_and_counts_the_rest(client: httpx.Client) -> None:
    case = create(client, evidence=big_evidence(20, "first"))
    for n in range(8):
        add_evidence(client, case["id"], {"evidence": big_evidence(20, f"batch-{n}")})
    nearly = add_evidence(client, case["id"], {"evidence": big_evidence(15, "last")}).json()
    assert (len(nearly["evidence"]), nearly["evidence_dropped"]) == (195, 0)
    edge = add_evidence(client, case["id"], {"evidence": big_evidence(10, "edge")}).json()
    assert (len(edge["evidence"]), edge["evidence_dropped"]) == (200, 5)
    assert edge["history"][-1]["note"] == "5 item(s); 5 not kept (a case keeps 200)"
    escalated = add_evidence(
        client, case["id"], {"evidence": big_evidence(1, "worse"), "priority": "critical"}
    ).json()
    assert (len(escalated["evidence"]), escalated["evidence_dropped"]) == (200, 6)
    assert escalated["priority"] == "critical"
    assert [h["action"] for h in escalated["history"]][-3:] == ["evidence", "evidence", "escalate"]
    assert [e["source_id"] for e in escalated["evidence"]][-5:] == ["edge"] * 5


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One platform for a property test's many examples (starting one costs a second)."""
    with running_platform(tmp_path_factory.mktemp("platform") / "cases.db") as c:
        yield c


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=25,
)
_field = st.sampled_from(
    ["class_code", "deadline", "location", "evidence", "priority", "source", "description",
     "external_key", "part_code", "extra"]
)  # fmt: skip
# A valid body with some fields replaced by anything, or anything at all.
_bodies = st.one_of(
    st.dictionaries(_field, _json, max_size=4).map(lambda changes: case_body(**changes)),
    _json,
)


@settings(max_examples=120, deadline=None)
@given(body=_bodies, evidence=st.booleans(), key=st.none() | st.text(max_size=200))
def test_any_body_gets_a_case_or_a_4xx_never_a_server_error(
    shared_client: httpx.Client, body: Any, evidence: bool, key: str | None
) -> None:
    headers = {"Idempotency-Key": key} if key and key.isascii() and key.isprintable() else {}
    if evidence:
        existing = shared_client.get("/api/v1/cases", params={"limit": 1}).json()["cases"]
        case_id = existing[0]["id"] if existing else "C20000101-000001"
        payload = {"evidence": body} if isinstance(body, list) else body
        response = shared_client.post(
            f"/api/v1/cases/{case_id}/evidence", json=payload, headers=headers
        )
    else:
        response = shared_client.post("/api/v1/cases", json=body, headers=headers)
    assert response.status_code in {200, 201, 400, 404, 409, 422}, response.text
    answer = response.json()
    assert isinstance(answer, dict)
    assert ("id" in answer) == (response.status_code in {200, 201}), answer


def test_requests_answered_from_a_used_key_are_counted_as_replays(client: httpx.Client) -> None:
    """What the cluster tests read to tell a command sent twice from one sent once."""
    assert client.get("/api/v1/replays").json() == {"create": 0, "evidence": 0}
    for _ in range(3):
        created = client.post(
            "/api/v1/cases", json=case_body(), headers={"Idempotency-Key": "cmd-r"}
        ).json()
    body = {"evidence": [{"source_id": "bin-9", "ts": 1}], "priority": "urgent"}
    for _ in range(2):
        assert add_evidence(client, created["id"], body, key="ev").status_code == 200
    assert client.get("/api/v1/replays").json() == {"create": 2, "evidence": 1}
