"""Retention of alerts, dead letters, delivered commands, closed incidents, suspected
duplicates and evidence, with exact numbers on a real SQLite file and a real folder of
pictures."""

from __future__ import annotations

import json
import os

from case_bridge import outbox
from domain import Alert, AlertState, CaseCommand, CommandKind, Location, Priority
from gateway import duplicates, retention, store
from gateway.retention import RetentionSettings

DAY = 86_400_000
NOW = 1_800_000_000_000
SETTINGS = RetentionSettings(
    alerts_days=10,
    dead_letters_days=5,
    dead_letters_max_rows=100,
    delivered_outbox_days=3,
    closed_incidents_days=20,
    evidence_days=2,
    evidence_max_mb=1,
)


def _alert(ts: int) -> Alert:
    return Alert("BIN-001/full", "BIN-001", "full", AlertState.FIRING, "06010",
                 Priority.NORMAL, Location(26.0, 119.0), ts)  # fmt: skip


def _fill(conn) -> None:
    batch = store.Batch()
    for age_days in (30, 11, 9, 1):
        ts = NOW - age_days * DAY
        batch.alerts.append(("BIN-001/full", "firing", ts, None, json.dumps({"ts": ts})))
    for i in range(150):  # 50 are 6 days old, 100 are fresh
        received = NOW - (6 * DAY if i < 50 else 1000)
        batch.reject(received, "t", "X", "bad_schema", "d", b"{}")
    batch.states += [
        ("incident", "INC-old", {"id": "INC-old", "status": "closed", "last_ts": NOW - 30 * DAY}),
        ("incident", "INC-new", {"id": "INC-new", "status": "closed", "last_ts": NOW - 1 * DAY}),
        ("incident", "INC-open", {"id": "INC-open", "status": "open", "last_ts": NOW - 90 * DAY}),
    ]
    store.commit(conn, batch)
    commands = [
        ("INC-old", 30, "delivered"),
        ("INC-new", 1, "delivered"),
        ("INC-open", None, "pending"),
        ("INC-x", None, "parked"),
        ("INC-old", 30, "refused_closed"),
        ("INC-new", 1, "refused_closed"),
        ("INC-old", 30, "refiled"),
    ]
    for n, (incident, delivered_days_ago, state) in enumerate(commands):
        alert = _alert(NOW)
        command = CaseCommand(f"{incident}/{n}", incident, CommandKind.OPEN, alert, Priority.LOW)
        with conn:
            outbox.enqueue(conn, command, NOW - 40 * DAY)
        if state == "delivered":
            seq = conn.execute("SELECT max(seq) FROM outbox").fetchone()[0]
            outbox.mark_delivered(conn, seq, NOW - delivered_days_ago * DAY)
        elif state == "parked":
            outbox.park(conn, conn.execute("SELECT max(seq) FROM outbox").fetchone()[0], "4xx")
        elif state in ("refiled", "refused_closed"):
            seq = conn.execute("SELECT max(seq) FROM outbox").fetchone()[0]
            left_ms = NOW - delivered_days_ago * DAY
            outbox.mark_case_final(conn, seq, state == "refiled", "case closed", left_ms)
        outbox.link_case(conn, incident, f"CASE-{incident}", NOW - 40 * DAY)


def test_each_kind_expires_exactly_and_work_still_to_do_is_kept(tmp_path):
    conn = store.connect(tmp_path / "gateway.db")
    _fill(conn)
    report = retention.upkeep(conn, SETTINGS, tmp_path / "evidence", NOW, batch_rows=7, pause_s=0)

    assert [ts for (ts,) in conn.execute("SELECT ts FROM alerts ORDER BY id")] == [
        NOW - 9 * DAY,
        NOW - 1 * DAY,
    ]
    # 50 past their age, then the cap of 100 keeps all the fresh ones.
    assert conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 100
    # The operators' totals still count every refusal.
    assert store.rejection_counts(conn) == {"bad_schema": 150}
    states = conn.execute("SELECT command_id, state FROM outbox ORDER BY seq").fetchall()
    assert states == [
        ("INC-new/1", "delivered"), ("INC-open/2", "pending"), ("INC-x/3", "parked"),
        ("INC-new/5", "refused_closed"),
    ]  # fmt: skip
    assert [k for k, _ in store.load_states(conn, "incident")] == ["INC-new", "INC-open"]
    links = [i for (i,) in conn.execute("SELECT incident_id FROM case_links ORDER BY 1")]
    assert links == ["INC-new", "INC-open", "INC-x"]
    assert report == {
        "alerts": 2, "dead_letters": 50, "dead_letters_over_cap": 0, "outbox": 3,
        "refiled_markers": 0, "incidents": 1, "duplicates": 0, "evidence": 0,
    }  # fmt: skip

    again = retention.upkeep(conn, SETTINGS, tmp_path / "evidence", NOW, pause_s=0)
    assert set(again.values()) == {0}


def test_decided_and_moot_pairs_go_as_closed_incidents_do_and_open_ones_stay(tmp_path):
    """Retention 20 days: a pair decided 30 days ago goes, one decided yesterday stays; a
    moot pair goes with the closed incident that made it moot (past retention, or gone from
    the store), and stays while that incident is kept; a pair of two open incidents stays
    however old."""
    conn = store.connect(tmp_path / "gateway.db")
    batch = store.Batch()
    incidents = {"OPEN-1": ("open", 90), "OPEN-2": ("open", 90), "OPEN-3": ("open", 1),
                 "OLD": ("closed", 30), "NEW": ("closed", 1)}  # fmt: skip
    for key, (status, age) in incidents.items():
        value = {"id": key, "status": status, "last_ts": NOW - age * DAY, "closed_reason": "x"}
        batch.states.append(("incident", key, value))
    pairs = {"open": ("OPEN-1", "OPEN-2"), "merged-old": ("OPEN-1", "OPEN-3"),
             "dismissed-new": ("OPEN-2", "OPEN-3"), "moot-old": ("OPEN-1", "OLD"),
             "moot-new": ("NEW", "OPEN-2"), "moot-gone": ("OPEN-3", "GONE")}  # fmt: skip
    batch.suspects += [
        {"id": name, "incident_id": a, "other_incident_id": b, "score": 0.6, "reasons": ["r"],
         "ts": NOW - 60 * DAY}
        for name, (a, b) in pairs.items()
    ]  # fmt: skip
    store.commit(conn, batch)
    for name, status, age in (("merged-old", "merged", 30), ("dismissed-new", "dismissed", 1)):
        conn.execute("UPDATE suspected_duplicates SET status = ?, decided_at = ? WHERE id = ?",
                     (status, NOW - age * DAY, name))  # fmt: skip
    shown = {p["id"]: p["status"] for p in duplicates.page(conn, None, 10, None).rows}
    assert shown == {"open": "open", "merged-old": "merged", "dismissed-new": "dismissed",
                     "moot-old": "moot", "moot-new": "moot", "moot-gone": "moot"}  # fmt: skip

    report = retention.upkeep(conn, SETTINGS, tmp_path / "none", NOW, batch_rows=2, pause_s=0)
    assert (report["incidents"], report["duplicates"]) == (1, 3)
    kept = [i for (i,) in conn.execute("SELECT id FROM suspected_duplicates ORDER BY rowid")]
    assert kept == ["open", "dismissed-new", "moot-new"]
    again = retention.upkeep(conn, SETTINGS, tmp_path / "none", NOW, pause_s=0)
    assert again["duplicates"] == 0


def test_dead_letters_beyond_the_cap_go_oldest_first(tmp_path):
    conn = store.connect(tmp_path / "gateway.db")
    batch = store.Batch()
    for i in range(250):
        batch.reject(NOW - 1000, f"t/{i}", "X", "too_large", "d", b"")
    store.commit(conn, batch)
    report = retention.upkeep(conn, SETTINGS, tmp_path / "none", NOW, batch_rows=40, pause_s=0)
    assert report["dead_letters_over_cap"] == 150
    topics = [t for (t,) in conn.execute("SELECT topic FROM dead_letters ORDER BY id")]
    assert topics == [f"t/{i}" for i in range(150, 250)]


def test_evidence_goes_by_age_then_oldest_first_to_fit_the_size(tmp_path):
    folder = tmp_path / "evidence"
    folder.mkdir()
    now_s = NOW / 1000
    ages_days = {"a.jpg": 5, "b.jpg": 1.5, "c.jpg": 1.0, "d.jpg": 0.5}
    for name, age in ages_days.items():
        path = folder / name
        path.write_bytes(b"\xff" * 400_000)  # 3 fresh ones: 1.2 MB > 1 MB
        os.utime(path, (now_s - age * 86400, now_s - age * 86400))
    outside = tmp_path / "keep.jpg"
    outside.write_bytes(b"x")
    os.utime(outside, (0, 0))
    (folder / "link.jpg").symlink_to(outside)

    deleted = retention.expire_evidence(folder, now_s - 2 * 86400, 2**20)
    assert deleted == 2  # a.jpg by age, b.jpg to fit
    assert sorted(p.name for p in folder.iterdir()) == ["c.jpg", "d.jpg", "link.jpg"]
    assert outside.exists()  # a link is never followed, nor counted
