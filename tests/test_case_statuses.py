"""The statuses the platform gave for each filed case, kept in a real SQLite store
(``case_bridge/outbox.py``): each change once, whichever way it came, an older change
learnt late left out, at most ``MAX_STATUSES_PER_CASE`` per case, gone with the case's
link when retention drops its incident; listed with each incident over real loopback
HTTP."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from api_principals import ADMIN, Deployments
from api_server import ServedApi
from hypothesis import given, settings
from hypothesis import strategies as st

from case_bridge import outbox
from case_bridge.platform import MAX_FIELD_CHARS
from gateway import retention, store

CASES = ("C-1", "C-2")
T0_MS = 1_795_000_000_000


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    opened = store.connect(tmp_path / "gateway.db")
    yield opened
    opened.close()


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


class Model:
    """What each case should keep: a change is left out when the case's latest kept status
    is the same or of a later time (``ms``: the platform's time, None when it is not a
    zoned ISO 8601 time), or the same change is kept; the oldest go past the bound."""

    def __init__(self) -> None:
        self.kept: dict[str, list[tuple[str, str, str]]] = {case: [] for case in CASES}
        self.ms: dict[str, int | None] = {}

    def add(self, case_id: str, status: str, updated_at: str, ms: int | None, source: str) -> bool:
        status, updated_at = status[:MAX_FIELD_CHARS], updated_at[:MAX_FIELD_CHARS]
        mine = self.kept[case_id]
        if mine:
            latest_ms = self.ms[mine[-1][1]]
            later = latest_ms is not None and ms is not None and latest_ms > ms
            if mine[-1][0] == status or later:
                return False
        if any((s, u) == (status, updated_at) for s, u, _ in mine):
            return False
        self.ms[updated_at] = ms
        mine.append((status, updated_at, source))
        del mine[: -outbox.MAX_STATUSES_PER_CASE]
        return True


# The platform's time as it writes it, with what it means in ms: ISO 8601 with a zone, or
# without one (not a time: its zone is unknown), or its own format or junk (not starting
# with a digit, so never read as a time).
at = st.integers(0, 40).map(lambda n: T0_MS + n * 1000)
times = st.one_of(
    at.map(lambda ms: (iso(ms), ms)),
    at.map(lambda ms: (iso(ms).replace("+00:00", "Z"), ms)),
    at.map(lambda ms: (iso(ms).replace("+00:00", ""), None)),
    st.text(max_size=80).filter(lambda t: not t[:1].isdigit()).map(lambda t: (t, None)),
)
events = st.lists(
    st.tuples(
        st.sampled_from(CASES),
        st.one_of(st.sampled_from(["accepted", "handling", "verifying"]), st.text(max_size=80)),
        times,
        st.sampled_from(outbox.SOURCES),
    ),
    max_size=130,
)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(events)
def test_each_change_is_kept_once_in_order_and_within_the_bound(tmp_path_factory, events):
    conn = store.connect(tmp_path_factory.mktemp("statuses") / "gateway.db", synchronous="OFF")
    for n, case_id in enumerate(CASES):
        outbox.link_case(conn, f"INC-{n}", case_id, 0)
    model = Model()
    for i, (case_id, status, (updated_at, ms), source) in enumerate(events):
        added = outbox.record_status(conn, case_id, status, updated_at, source, i)
        assert added == model.add(case_id, status, updated_at, ms, source)
    for case_id in CASES:
        kept = outbox.case_statuses(conn, case_id)
        assert [(k["status"], k["updated_at"], k["source"]) for k in kept] == model.kept[case_id]
        assert outbox.latest_status(conn, case_id) == (kept[-1] if kept else None)
    conn.close()


def test_at_most_the_newest_statuses_are_kept_per_case(conn: sqlite3.Connection) -> None:
    """Past the bound the oldest go; a case's bound leaves another case's statuses alone,
    and a change older than the kept ones is not brought back."""
    outbox.link_case(conn, "INC-1", "C-1", 0)
    outbox.link_case(conn, "INC-2", "C-2", 0)
    outbox.record_status(conn, "C-2", "accepted", iso(T0_MS), "poll", 0)
    extra = 7
    for n in range(outbox.MAX_STATUSES_PER_CASE + extra):
        status = ("handling", "verifying")[n % 2]
        assert outbox.record_status(conn, "C-1", status, iso(T0_MS + n), "poll", n)
    kept = outbox.case_statuses(conn, "C-1")
    assert [k["updated_at"] for k in kept] == [
        iso(T0_MS + n) for n in range(extra, outbox.MAX_STATUSES_PER_CASE + extra)
    ]
    assert not outbox.record_status(conn, "C-1", "handling", iso(T0_MS), "webhook", 99)
    assert len(outbox.case_statuses(conn, "C-2")) == 1


def test_an_unknown_source_is_refused_and_long_values_are_cut(conn: sqlite3.Connection) -> None:
    outbox.link_case(conn, "INC-1", "C-1", 0)
    with pytest.raises(ValueError, match="source: one of poll, webhook"):
        outbox.record_status(conn, "C-1", "closed", iso(T0_MS), "email", 1)
    assert outbox.record_status(conn, "C-1", "x" * 500, "y" * 500, "poll", 1)
    [kept] = outbox.case_statuses(conn, "C-1")
    assert (len(kept["status"]), len(kept["updated_at"])) == (MAX_FIELD_CHARS, MAX_FIELD_CHARS)


def test_retention_drops_a_case_s_statuses_with_its_incident(conn: sqlite3.Connection) -> None:
    """An incident closed a year ago goes with its case link and its statuses; an open
    incident's stay."""
    now_ms = T0_MS + 400 * retention.DAY_MS
    for incident_id, status, last_ts in (("INC-old", "closed", T0_MS), ("INC-new", "open", now_ms)):
        incident = {"id": incident_id, "status": status, "last_ts": last_ts}
        store.write_states(conn, [("incident", incident_id, incident)])
        case_id = f"C-{incident_id}"
        outbox.link_case(conn, incident_id, case_id, T0_MS)
        outbox.record_status(conn, case_id, "handling", iso(T0_MS), "poll", T0_MS)
        outbox.record_status(conn, case_id, "closed", iso(T0_MS + 1), "webhook", T0_MS)
    report = retention.upkeep(conn, retention.RetentionSettings(), Path("/nonexistent"), now_ms)
    assert report["incidents"] == 1
    assert outbox.case_statuses(conn, "C-INC-old") == []
    assert [k["status"] for k in outbox.case_statuses(conn, "C-INC-new")] == ["handling", "closed"]


HANDLING = {"status": "handling", "updated_at": iso(T0_MS), "seen_ms": T0_MS + 5,
            "source": "poll"}  # fmt: skip
VERIFYING = {"status": "verifying", "updated_at": iso(T0_MS + 9), "seen_ms": T0_MS + 10,
             "source": "webhook"}  # fmt: skip


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedApi]:
    """The API on a store with three incidents: INC-1 filed as C-1 with two statuses from
    the platform, INC-2 filed as C-2 with none yet, INC-3 not filed."""
    deployments = Deployments(tmp_path)
    api = deployments.serve()
    conn = api.gateway.conn
    for n in (1, 2, 3):
        store.write_states(conn, [("incident", f"INC-{n}", {"id": f"INC-{n}"})])
    outbox.link_case(conn, "INC-1", "C-1", T0_MS)
    outbox.link_case(conn, "INC-2", "C-2", T0_MS)
    for kept in (HANDLING, VERIFYING):
        fields = (kept["status"], kept["updated_at"], kept["source"], kept["seen_ms"])
        outbox.record_status(conn, "C-1", *fields)
    yield api
    deployments.close()


def test_incidents_are_listed_with_their_case_s_latest_platform_status(served: ServedApi) -> None:
    answer = served.http.get("/api/v1/incidents", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    rows = answer.json()["incidents"]
    assert [(r["id"], r["case_id"], r["platform_status"]) for r in rows] == [
        ("INC-1", "C-1", VERIFYING), ("INC-2", "C-2", None), ("INC-3", None, None),
    ]  # fmt: skip


def test_an_incident_s_timeline_holds_each_platform_status_when_it_was_learnt(
    served: ServedApi,
) -> None:
    answer = served.http.get("/api/v1/console/incidents/INC-1", headers=ADMIN).json()
    assert answer["incident"]["platform_status"] == VERIFYING
    assert answer["events"] == [
        {"type": "case_filed", "at_ms": T0_MS, "case_id": "C-1"},
        {"type": "platform_status", "at_ms": T0_MS + 5, **HANDLING},
        {"type": "platform_status", "at_ms": T0_MS + 10, **VERIFYING},
    ]
    unfiled = served.http.get("/api/v1/console/incidents/INC-3", headers=ADMIN).json()
    assert (unfiled["incident"]["platform_status"], unfiled["events"]) == (None, [])
