"""The pipeline survives what no codec foresaw, and a store that refuses commits.

The gateway is built from a real config over a real SQLite file (not started: no broker
or platform is needed to drive its pipeline), so every part is the one that runs live.
"""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from devices.rejections import Reason
from devices.status import DeviceStatus
from domain import Alert, AlertState, CaseCommand, CommandKind, Location, Priority, Reading
from gateway import store
from gateway.pipeline import StoreUnavailable
from gateway.service import Gateway

NOW = int(time.time() * 1000)


def bin_reading(ts: int, fill: float, seq: int | None = None) -> Reading:
    return Reading("BIN-001", "bin", ts, {"fill_pct": fill}, seq)


def stored(gw: Gateway) -> list[tuple]:
    return gw.conn.execute("SELECT device_id, ts, seq FROM readings ORDER BY rowid").fetchall()


def dead_letters(gw: Gateway) -> list[tuple]:
    return gw.conn.execute(
        "SELECT topic, device_id, reason, detail FROM dead_letters ORDER BY id"
    ).fetchall()


def test_a_message_that_breaks_the_rules_is_an_internal_dead_letter_and_the_batch_goes_on(
    gateway,
):
    """A codec bug letting raw bytes through as a value makes the pipeline raise:
    that message alone is refused as ``internal`` with the error, the rest are stored."""
    broken = Reading("BIN-001", "bin", NOW - 2000, {"fill_pct": b"\x5f"})  # type: ignore[dict-item]
    items = [
        ("serial:/dev/ttyUSB0", b"$BN,BIN-001,full*00", broken),
        ("serial:/dev/ttyUSB0", b"$BN,BIN-001,40*00", bin_reading(NOW - 1000, 40.0)),
    ]
    assert gateway.pipeline.process_decoded(items, NOW) == []
    assert stored(gateway) == [("BIN-001", NOW - 1000, None)]
    [(topic, device, reason, detail)] = dead_letters(gateway)
    assert (topic, device, reason) == ("serial:/dev/ttyUSB0", "BIN-001", "internal")
    assert detail.startswith("TypeError: ")
    assert store.rejection_counts(gateway.conn) == {"internal": 1}
    assert gateway.pipeline.counters["rejected_internal"] == 1
    assert gateway.pipeline.counters["accepted"] == 1  # the refused one is not also accepted


def test_integers_beyond_64_bits_are_refused_before_they_touch_any_state(gateway):
    """Had the replay guard taken ts = 2**70, every later reading of the device would be
    stale; had the store, the batch's commit would fail on every redelivery."""
    items = [
        ("t", b"1", bin_reading(2**70, 40.0)),
        ("t", b"2", bin_reading(NOW - 3000, 40.0, seq=2**64)),
        ("t", b"3", bin_reading(NOW - 2000, 40.0, seq=7)),
    ]
    gateway.pipeline.process_decoded(items, NOW)
    assert stored(gateway) == [("BIN-001", NOW - 2000, 7)]
    assert [d[2] for d in dead_letters(gateway)] == [Reason.OUT_OF_RANGE] * 2


def test_a_refused_commit_is_kept_and_saved_once_when_the_store_takes_it_again(gateway):
    """``max_page_count`` makes SQLite itself answer "database or disk is full" (on the
    pipeline's own connection, where its commits run)."""
    conn = gateway.pipeline_conn
    gateway.pipeline.process_decoded([("t", b"", bin_reading(NOW - 9000, 10.0, 1))], NOW)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    big = [("t", b"", bin_reading(NOW - 8000 + i, 20.0, 2 + i)) for i in range(2000)]
    with pytest.raises(StoreUnavailable):
        gateway.pipeline.process_decoded(big, NOW)
    assert gateway.pipeline.unsaved
    with pytest.raises(StoreUnavailable):  # the device's alerts go nowhere meanwhile either
        gateway.pipeline.apply_alerts([], NOW)
    with pytest.raises(StoreUnavailable):
        gateway.pipeline.flush()
    assert len(stored(gateway)) == 1

    conn.execute("PRAGMA max_page_count = 1073741823")
    gateway.pipeline.flush()
    assert not gateway.pipeline.unsaved
    rows = stored(gateway)
    assert [seq for _, _, seq in rows] == list(range(1, 2002))
    # The replay guard's committed state matches the readings committed.
    [(state,)] = conn.execute("SELECT value FROM state WHERE ns = 'replay'").fetchall()
    assert json.loads(state)["last_ts"] == NOW - 8000 + 1999
    gateway.pipeline.flush()  # nothing left: a no-op, no second copy
    assert len(stored(gateway)) == 2001


def test_statuses_and_refusals_in_one_batch_keep_their_order_and_counts(gateway):
    items = [
        ("citygw/v1/MH-001/status", b"offline", DeviceStatus("MH-001", online=False, ts=NOW)),
        ("t", b"", bin_reading(NOW - 5000, 30.0, 1)),
        ("t", b"", bin_reading(NOW - 5000, 30.0, 1)),  # redelivered
    ]
    gateway.pipeline.process_decoded(items, NOW)
    assert [d[2] for d in dead_letters(gateway)] == ["duplicate"]
    assert gateway.pipeline.counters["status_offline"] == 1
    assert gateway.pipeline.counters["accepted"] == 1


def test_closed_incidents_are_not_loaded_at_start(tmp_path, gateway):
    """A full bin files a case; its case closes; a restarted gateway loads only what is
    still open, and the closed incident stays readable in the store."""
    pipeline = gateway.pipeline
    for i in range(12):
        reading = bin_reading(NOW - 3_600_000 + i * 300_000, 95.0)
        pipeline.process_decoded([("t", b"", reading)], NOW)
    incidents = list(store.load_states(gateway.conn, "incident"))
    assert len(incidents) == 1, "the scenario's bin rule must have fired"
    [(incident_id, _)] = incidents
    pipeline.close_incident(incident_id, "case closed on the platform")
    assert [i["status"] for _, i in store.load_states(gateway.conn, "incident")] == ["closed"]
    assert list(store.load_open_incidents(gateway.conn)) == []
    gateway.conn.close()

    again = Gateway(gateway.config)
    assert again.incidents.handle  # built
    assert list(store.load_open_incidents(again.conn)) == []
    assert again.incidents.take_dirty() == {}


def test_a_failed_commit_leaves_no_transaction_open(tmp_path):
    """store.commit leaves no transaction open after a failure, whatever step failed."""
    conn = store.connect(tmp_path / "s.db")
    batch = store.Batch()
    batch.readings.append(("D", 2**63, None, "{}", 0))  # beyond SQLite INTEGER
    with pytest.raises(OverflowError):
        store.commit(conn, batch)
    assert not conn.in_transaction
    with pytest.raises(sqlite3.IntegrityError):
        bad = store.Batch()
        bad.readings.append(("D", 1, None, None, 0))  # values_json NOT NULL
        store.commit(conn, bad)
    assert not conn.in_transaction


def test_a_stranded_escalation_is_filed_again_once_at_its_priority(gateway):
    """The platform closed the case while an escalation was on its way: the alert opens a
    new incident at the escalated priority, and handing the same command over again (a
    crash before the outbox marked it) files nothing more."""
    pipeline = gateway.pipeline
    for i in range(12):
        reading = bin_reading(NOW - 3_600_000 + i * 300_000, 95.0)
        pipeline.process_decoded([("t", b"", reading)], NOW)
    [(incident_id, incident)] = list(store.load_states(gateway.conn, "incident"))
    key = incident["alert_keys"][0]
    alert = Alert(key, "BIN-001", "full", AlertState.ESCALATED, incident["class_code"],
                  Priority.CRITICAL, Location(26.0, 119.0), NOW)  # fmt: skip
    stranded = CaseCommand(f"{incident_id}/2", incident_id, CommandKind.ESCALATE, alert,
                           Priority.CRITICAL)  # fmt: skip

    pipeline.close_incident(incident_id, "case closed before evidence arrived")
    [refiled] = pipeline.refile(stranded, NOW)
    assert (refiled.kind, refiled.priority) == (CommandKind.OPEN, Priority.CRITICAL)
    assert refiled.incident_id != incident_id
    assert pipeline.refile(stranded, NOW) == []
    again = Gateway(gateway.config)  # a restart: the marker is in the store
    assert again.pipeline.refile(stranded, NOW) == []
    open_ids = [i["id"] for i in store.load_open_incidents(gateway.conn)]
    assert open_ids == [refiled.incident_id]


def test_refusals_are_logged_sampled_per_device_and_reason(gateway, caplog):
    """A device sending junk at line rate logs its 1st, 10th and 100th refusal, with its
    id as a structured field, never the payload; another device's first is logged too."""
    junk = [("citygw/v1/BIN-001/telemetry", b"{not json SECRETPAYLOAD", None)] * 120
    other = [("citygw/v1/MH-001/telemetry", b"[]", None)]
    with caplog.at_level("WARNING", logger="gateway.pipeline"):
        gateway.pipeline.process_decoded(
            [(topic, raw, gateway.router.decode(topic, raw, gateway.registry, NOW, 10_000))
             for topic, raw, _ in junk + other],
            NOW,
        )  # fmt: skip
    lines = [(r.device_id, r.getMessage()) for r in caplog.records if "refused" in r.message]
    assert [device for device, _ in lines] == ["BIN-001", "BIN-001", "BIN-001", "MH-001"]
    assert [text.split(" so far")[0].rsplit(" ", 1)[1] for _, text in lines] == [
        "1",
        "10",
        "100",
        "1",
    ]
    assert not any("SECRETPAYLOAD" in text for _, text in lines)
    assert gateway.pipeline.counters["rejected_malformed_json"] == 120
