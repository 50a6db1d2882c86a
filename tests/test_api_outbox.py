"""An operator's way out of a parked unclear send: resolve (found on the platform, or not
filed) and the per-command requeue, over the API.

The gateway's own store (a real SQLite file), the router served by uvicorn on loopback
behind the gateway's own guard with an operator's and a viewer's client tokens, and the
real dispatcher delivering to a platform that keeps no idempotency keys (real HTTP on
loopback, ``tests/keyless_platform.py``) whose lookups are refused, so an unclear send
parks with its mark. Every answer, the platform's cases and the audit log are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from keyless_platform import Filed, KeylessBundled, KeylessPlatformFake
from scripted_platform import CUT, TOKEN, Reply
from served_app import ServedApp
from test_outbox_dispatch import FAST, Run, command, enqueue

from case_bridge import outbox
from domain import CommandKind
from gateway import audit, store
from gateway.api_errors import install_validation_errors
from gateway.api_guard import ApiGuard
from gateway.api_outbox import outbox_router
from gateway.audit import AuditTrail
from gateway.client_tokens import ClientTokens

NOW = 1_760_000_000_000
CASE = "C20261121-000001"
REFUSED_LOOKUP = Reply(404, {"detail": "no such route"})


@dataclass
class Desk:
    conn: Any
    platform: KeylessPlatformFake
    gateway: Run
    runner: asyncio.Runner
    operator: httpx.Client
    viewer: httpx.Client
    wakes: list[int]

    def deliver(self) -> None:
        self.runner.run(self.gateway.drain_until_quiet())

    def rows(self) -> list[tuple]:
        return self.conn.execute(
            "SELECT command_id, state, maybe_filed, last_error FROM outbox ORDER BY seq"
        ).fetchall()

    def seq(self, command_id: str) -> int:
        query = "SELECT seq FROM outbox WHERE command_id = ?"
        return self.conn.execute(query, (command_id,)).fetchone()[0]

    def audit(self) -> list[tuple]:
        entries = audit.page(self.conn, 50).rows
        return [
            (e["actor"], e["role"], e["action"], e["target"], e["before"]["state"], e["after"],
             e["reason"])
            for e in reversed(entries)
        ]  # fmt: skip

    def snapshot(self) -> tuple:
        """Everything a refusal must leave as it was."""
        return (
            self.conn.execute("SELECT * FROM outbox ORDER BY seq").fetchall(),
            self.conn.execute("SELECT * FROM case_links ORDER BY incident_id").fetchall(),
            self.conn.execute("SELECT count(*) FROM audit").fetchone(),
        )


@contextlib.contextmanager
def served_desk(folder: Path) -> Iterator[Desk]:
    conn = store.connect(folder / "gateway.db")
    tokens = ClientTokens(conn)
    _, operator_token = tokens.create("ana", "operator", "test", NOW)
    _, viewer_token = tokens.create("vic", "viewer", "test", NOW)
    wakes: list[int] = []
    app = FastAPI()
    install_validation_errors(app)
    app.add_middleware(ApiGuard, token=None, public_paths=set(), max_url_bytes=4096,
                       max_body_bytes=16_384, tokens=tokens)  # fmt: skip
    app.include_router(outbox_router(conn, AuditTrail(conn), lambda: wakes.append(1)))
    with (
        KeylessPlatformFake() as platform,
        ServedApp(app) as server,
        asyncio.Runner() as runner,
        httpx.Client(base_url=server.url, timeout=10) as operator,
        httpx.Client(base_url=server.url, timeout=10) as viewer,
    ):
        operator.headers["Authorization"] = f"Bearer {operator_token}"
        viewer.headers["Authorization"] = f"Bearer {viewer_token}"
        gateway = Run(conn, KeylessBundled(platform.url, TOKEN, timeout_s=0.3), FAST)
        yield Desk(conn, platform, gateway, runner, operator, viewer, wakes)
    conn.close()


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    with served_desk(tmp_path) as served:
        yield served


def post(client: httpx.Client, seq: int | str, action: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False)
    return client.post(f"/api/v1/outbox/{quote(str(seq), safe='')}/{action}", content=content)


# --- the way out ---------------------------------------------------------------------------


def test_a_case_found_on_the_platform_is_linked_and_its_evidence_then_flows(desk: Desk) -> None:
    enqueue(desk.conn, command("INC-a", 1), command("INC-a", 2, CommandKind.ATTACH),
            command("INC-b", 3))  # fmt: skip
    desk.platform.script(Filed(CUT), REFUSED_LOOKUP)  # filed, the answer cut; lookup refused
    desk.deliver()
    unclear = (
        'looking up an unclear send: HTTP 404 on GET /api/v1/cases: {"detail": "no such route"}'
    )
    assert desk.rows() == [
        ("INC-a/1", "parked", 1, unclear),
        ("INC-a/2", "parked", 0, outbox.NO_CASE),
        ("INC-b/3", "delivered", 0, ""),
    ]
    seq = desk.seq("INC-a/1")

    requeued = post(desk.operator, seq, "requeue", {"reason": "lookup route fixed?"})
    assert (requeued.status_code, requeued.json()["command"]["state"]) == (200, "pending")
    desk.platform.script(REFUSED_LOOKUP)
    desk.deliver()
    assert desk.rows()[0] == ("INC-a/1", "parked", 1, unclear)  # parked again: still unclear

    found = post(desk.operator, seq, "resolve", {"case_id": CASE, "reason": "seen on the platform"})
    assert found.status_code == 200, found.text
    assert (found.json()["command"]["state"], found.json()["command"]["maybe_filed"]) == (
        "delivered", 0
    )  # fmt: skip
    assert outbox.case_for(desk.conn, "INC-a") == CASE
    assert desk.rows()[1] == ("INC-a/2", "pending", 0, outbox.NO_CASE)
    desk.deliver()
    assert desk.platform.calls() == [
        "POST INC-a", "GET", "POST INC-b", "GET", f"POST /api/v1/cases/{CASE}/evidence",
    ]  # fmt: skip
    assert desk.platform.filed() == {"INC-a": 1, "INC-b": 1}
    assert [state for _, state, _, _ in desk.rows()] == ["delivered"] * 3
    target = f"outbox:{seq}"
    assert desk.audit() == [
        ("ana", "operator", "outbox.requeue", target, "parked", {"state": "pending"},
         "lookup route fixed?"),
        ("ana", "operator", "outbox.resolve", target, "parked",
         {"state": "delivered", "case_id": CASE}, "seen on the platform"),
    ]  # fmt: skip
    assert desk.wakes == [1, 1]


def test_a_send_not_filed_after_all_is_posted_by_the_next_send(desk: Desk) -> None:
    enqueue(desk.conn, command("INC-a", 1))
    desk.platform.script(CUT, REFUSED_LOOKUP)  # cut before the platform acted
    desk.deliver()
    seq = desk.seq("INC-a/1")
    answer = post(desk.operator, seq, "resolve", {"not_filed": True, "reason": "not on it"})
    assert answer.status_code == 200, answer.text
    assert desk.rows()[0][:3] == ("INC-a/1", "pending", 0)
    desk.deliver()
    assert desk.platform.calls() == ["POST INC-a", "GET", "POST INC-a"]  # no lookup first
    assert desk.platform.filed() == {"INC-a": 1}
    assert desk.audit()[0][2:6] == (
        "outbox.resolve", f"outbox:{seq}", "parked", {"state": "pending", "maybe_filed": False}
    )  # fmt: skip


def test_parked_evidence_found_on_its_case_is_delivered(desk: Desk) -> None:
    """A marked attach (``evidence_after_unclear: park``) resolves to its incident's case
    only."""
    enqueue(desk.conn, command("INC-a", 1, CommandKind.ATTACH))
    outbox.link_case(desk.conn, "INC-a", CASE, NOW)
    seq = desk.seq("INC-a/1")
    outbox.mark_maybe_filed(desk.conn, seq, True)
    outbox.park(desk.conn, seq, "evidence sent without a clear answer")
    before = desk.snapshot()
    elsewhere = post(desk.operator, seq, "resolve", {"case_id": "C-9", "reason": "there"})
    assert elsewhere.json() == {"detail": f"incident INC-a is filed as case {CASE}, not that case"}
    assert (elsewhere.status_code, desk.snapshot()) == (409, before)
    on_its_case = post(desk.operator, seq, "resolve", {"case_id": CASE, "reason": "on the case"})
    assert on_its_case.status_code == 200
    assert desk.rows() == [("INC-a/1", "delivered", 0, "")]


def test_an_open_is_never_resolved_to_a_case_another_incident_holds(desk: Desk) -> None:
    """Two incidents on one case: the second would never close and its evidence would land
    on the first's case. The operator is sent to the duplicates desk; the same open then
    resolves to a case of its own."""
    enqueue(desk.conn, command("INC-a", 1), command("INC-b", 2),
            command("INC-b", 3, CommandKind.ATTACH))  # fmt: skip
    outbox.link_case(desk.conn, "INC-a", CASE, NOW)
    seq = desk.seq("INC-b/2")
    outbox.mark_maybe_filed(desk.conn, seq, True)
    outbox.park(desk.conn, seq, "possible match")
    outbox.park(desk.conn, desk.seq("INC-b/3"), outbox.NO_CASE)
    before = desk.snapshot()
    taken = post(desk.operator, seq, "resolve", {"case_id": CASE, "reason": "typo"})
    assert (taken.status_code, taken.json()["detail"]) == (
        409,
        f"case {CASE} is incident INC-a's: if incident INC-b is the same problem, merge the"
        " two on the duplicates desk (/api/v1/duplicates)",
    )
    assert desk.snapshot() == before
    assert desk.wakes == []
    own = post(desk.operator, seq, "resolve", {"case_id": "C-2", "reason": "its own"})
    assert own.status_code == 200, own.text
    assert (outbox.incident_for(desk.conn, CASE), outbox.case_for(desk.conn, "INC-b")) == (
        "INC-a", "C-2"
    )  # fmt: skip
    assert [row[:2] for row in desk.rows()[1:]] == [("INC-b/2", "delivered"),
                                                    ("INC-b/3", "pending")]  # fmt: skip


REFUSE_OUTBOX_WRITES = (
    "CREATE TEMP TRIGGER outbox_refused BEFORE UPDATE ON outbox"
    " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
)


def test_a_store_that_refuses_the_change_is_answered_503_and_nothing_changes(desk: Desk) -> None:
    enqueue(desk.conn, command("INC-a", 1), command("INC-b", 2))
    found, parked = desk.seq("INC-a/1"), desk.seq("INC-b/2")
    outbox.mark_maybe_filed(desk.conn, found, True)
    outbox.park(desk.conn, found, "possible match")
    outbox.park(desk.conn, parked, "refused")
    before = desk.snapshot()
    desk.conn.execute(REFUSE_OUTBOX_WRITES)
    calls = [
        (found, "resolve", {"case_id": CASE, "reason": "seen"}),
        (found, "resolve", {"not_filed": True, "reason": "not there"}),
        (parked, "requeue", {"reason": "again"}),
    ]
    for seq, action, body in calls:
        answer = post(desk.operator, seq, action, body)
        assert (answer.status_code, answer.json()) == (
            503, {"detail": "the store refused the command's change: nothing was changed; retry"}
        ), (action, body)  # fmt: skip
    assert desk.snapshot() == before
    assert desk.wakes == []
    desk.conn.execute("DROP TRIGGER outbox_refused")
    again = post(desk.operator, parked, "requeue", {"reason": "again"})
    assert (again.status_code, again.json()["command"]["state"]) == (200, "pending")


# --- refusals ------------------------------------------------------------------------------


def test_each_refusal_says_why_and_changes_nothing(desk: Desk) -> None:
    enqueue(desk.conn, command("INC-a", 1), command("INC-b", 2), command("INC-c", 3))
    desk.platform.script(Filed(CUT), REFUSED_LOOKUP, Reply(422, {"detail": "class_code"}))
    desk.deliver()  # INC-a parked unclear, INC-b parked refused (no mark), INC-c delivered
    a, b, c = (desk.seq(f"{i}/{n}") for i, n in (("INC-a", 1), ("INC-b", 2), ("INC-c", 3)))
    ok = {"case_id": CASE, "reason": "why"}
    before = desk.snapshot()
    refusals = [
        (desk.operator, 999, "resolve", ok, 404, "no case command 999"),
        (desk.operator, 999, "requeue", {"reason": "x"}, 404, "no case command 999"),
        (desk.operator, b, "resolve", ok, 409, f"command {b} is parked, sent with a clear"
         " answer: only a parked command whose send was unclear is resolved"),
        (desk.operator, c, "resolve", ok, 409, f"command {c} is delivered, sent with a clear"
         " answer: only a parked command whose send was unclear is resolved"),
        (desk.operator, c, "requeue", {"reason": "x"}, 409,
         f"command {c} is delivered: only a parked one pends again"),
        (desk.operator, a, "resolve", {"reason": "x"}, 400,
         "body: Value error, give either case_id or not_filed: true"),
        (desk.operator, a, "resolve", {**ok, "not_filed": True}, 400,
         "body: Value error, give either case_id or not_filed: true"),
        (desk.operator, a, "resolve", {"not_filed": False, "reason": "x"}, 400,
         "not_filed: Input should be True"),
        (desk.operator, a, "resolve", {"case_id": "../C-1", "reason": "x"}, 400,
         "case_id: Value error, not a case id (letters, digits and _.:- , at most 64)"),
        (desk.operator, a, "resolve", {"case_id": CASE, "reason": "  "}, 400,
         "reason: String should match pattern '\\S'"),
        (desk.operator, a, "resolve", {**ok, "reason": "x" * 501}, 400,
         "reason: String should have at most 500 characters"),
        (desk.operator, a, "resolve", {**ok, "by": "me"}, 400,
         "by: Extra inputs are not permitted"),
        (desk.operator, a, "resolve", b"{case_id", 400, "body: not JSON"),
        (desk.operator, a, "requeue", {}, 400, "reason: Field required"),
    ]  # fmt: skip
    for client, seq, action, body, status, detail in refusals:
        answer = post(client, seq, action, body)
        assert (answer.status_code, answer.json()["detail"]) == (status, detail), (seq, body)
    viewer = post(desk.viewer, a, "resolve", ok)
    assert (viewer.status_code, viewer.json()["required_role"]) == (403, "operator")
    assert post(desk.operator, 0, "resolve", ok).status_code == 422  # no command has seq 0
    assert desk.snapshot() == before
    assert desk.wakes == []


# An index into the test's four commands (most draws), or any other path segment.
SEQS = st.one_of(
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=-2, max_value=2**64),
    st.text(alphabet="0123456789abc-%./", max_size=24),
)
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=70),
    st.sampled_from([CASE, "C-1", "C-9", True]),
)  # fmt: skip
BODIES = st.one_of(
    st.sampled_from(
        [
            {"case_id": CASE, "reason": "seen"},
            {"not_filed": True, "reason": "no"},
            {"reason": "again"},
        ]
    ),
    st.dictionaries(st.sampled_from(["case_id", "not_filed", "reason", "note"]), VALUES),
    st.binary(max_size=40),
    st.recursive(st.none() | st.integers(), lambda inner: st.lists(inner, max_size=3)),
)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(calls=st.lists(st.tuples(SEQS, st.sampled_from(["resolve", "requeue"]), BODIES),
                      min_size=1, max_size=4))  # fmt: skip
def test_no_body_or_seq_gets_a_5xx_and_a_refusal_changes_nothing(
    desk: Desk, calls: list[tuple[Any, str, Any]]
) -> None:
    desk.conn.execute("DELETE FROM outbox")
    desk.conn.execute("DELETE FROM case_links")
    enqueue(desk.conn, *(command(f"INC-{n}", n) for n in range(1, 5)))
    seqs = [desk.seq(f"INC-{n}/{n}") for n in range(1, 5)]
    for seq, (marked, parked) in zip(seqs, ((1, 1), (0, 1), (1, 0)), strict=False):
        outbox.mark_maybe_filed(desk.conn, seq, bool(marked))
        if parked:
            outbox.park(desk.conn, seq, "unclear")
        else:
            outbox.mark_delivered(desk.conn, seq, NOW)
    for seq, action, body in calls:
        target = seqs[seq] if isinstance(seq, int) and 0 <= seq < len(seqs) else seq
        before = desk.snapshot()
        answer = post(desk.operator, target, action, body)
        event(f"{action} {answer.status_code}")
        assert answer.status_code in (200, 400, 404, 409, 422), answer.text
        if answer.status_code != 200:
            assert desk.snapshot() == before
        else:
            assert answer.json()["command"]["seq"] == target
